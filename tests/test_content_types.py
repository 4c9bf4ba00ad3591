"""The content-type rules on their own: bytes decide, the allow-list holds, names are safe."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import pytest

from tests.uploads import (
    DOCX_PARTS,
    docx,
    elf,
    image,
    many_entries_docx,
    many_scans_jpeg,
    mp4_header,
    pdf,
    plain_zip,
)
from threadline.errors import BadInput
from threadline.models import AttachmentKind
from threadline.services.content_types import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_ZIP_ENTRIES,
    WORD,
    detect,
    display_name,
    safe_filename,
)


def _zip(*entries: tuple[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return out.getvalue()


def _ole(stream: str) -> bytes:
    return bytes.fromhex("d0cf11e0a1b11ae1") + b"\x00" * 1000 + stream.encode("utf-16-le")


@pytest.mark.parametrize(
    ("data", "content_type", "kind"),
    [
        (image("PNG"), "image/png", AttachmentKind.IMAGE),
        (image("JPEG"), "image/jpeg", AttachmentKind.IMAGE),
        (image("GIF"), "image/gif", AttachmentKind.IMAGE),
        (image("WEBP"), "image/webp", AttachmentKind.IMAGE),
        (pdf(), "application/pdf", AttachmentKind.DOCUMENT),
        (mp4_header(), "video/mp4", AttachmentKind.VIDEO),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 64, "audio/mpeg", AttachmentKind.AUDIO),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64, "audio/wav", AttachmentKind.AUDIO),
        (b"0123456789" * 50, "text/plain", AttachmentKind.DOCUMENT),
        ("naïve café ✓\n".encode() * 10, "text/plain", AttachmentKind.DOCUMENT),
        (
            docx(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            AttachmentKind.DOCUMENT,
        ),
        (
            _zip(("[Content_Types].xml", "<T/>"), ("xl/workbook.xml", "<w/>")),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            AttachmentKind.DOCUMENT,
        ),
        (
            _zip(("[Content_Types].xml", "<T/>"), ("ppt/presentation.xml", "<p/>")),
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            AttachmentKind.DOCUMENT,
        ),
        (
            _zip(("mimetype", "application/vnd.oasis.opendocument.text"), ("content.xml", "<x/>")),
            "application/vnd.oasis.opendocument.text",
            AttachmentKind.DOCUMENT,
        ),
        (_ole("WordDocument"), "application/msword", AttachmentKind.DOCUMENT),
        (_ole("Workbook"), "application/vnd.ms-excel", AttachmentKind.DOCUMENT),
    ],
)
def test_accepted_types_are_named_by_their_bytes(
    data: bytes, content_type: str, kind: AttachmentKind
) -> None:
    found = detect(io.BytesIO(data))
    assert (found.content_type, found.kind) == (content_type, kind)


@pytest.mark.parametrize(
    "data",
    [
        elf(),
        b"MZ\x90\x00" + b"\x00" * 64,
        b"<!doctype html><p>hi",
        b"\xef\xbb\xbf  <HTML><script>alert(1)</script>",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        b'<svg onload="alert(1)"/>',
        plain_zip(),
        b"PK\x03\x04 not really a zip",
        _ole("SomethingElse"),
        b"#!/usr/bin/env python\nprint(1)\n",
        bytes(range(256)),
        b"text\x00with a NUL",
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # a PNG signature on a broken image
    ],
)
def test_refused_types_are_bad_input(data: bytes) -> None:
    with pytest.raises(BadInput):
        detect(io.BytesIO(data))


def test_text_cut_in_the_middle_of_a_character_is_still_text() -> None:
    data = "é".encode() * 40_000  # the 64 KiB sample ends inside a character
    assert detect(io.BytesIO(data)).content_type == "text/plain"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("a\x00b\x1bc\u202ed.txt", "abcd.txt"),
        ("  spaced   out .txt  ", "spaced out .txt"),
        ("..", "file"),
        ("", "file"),
        (None, "file"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),
    ],
)
def test_file_names_are_reduced_to_a_safe_display_name(raw: str | None, shown: str) -> None:
    assert display_name(raw) == shown


@pytest.mark.parametrize(
    ("raw", "content_type", "saved"),
    [
        ("notes.txt", "text/plain", "notes.txt"),
        ("invite.html", "text/plain", "invite.html.txt"),
        ("invite.html::$DATA", "text/plain", "invite.html::$DATA.txt"),
        ("report.html", "application/pdf", "report.html.pdf"),
        ("IMG_1.JPG", "image/jpeg", "IMG_1.JPG"),
        ("IMG_1.JPG", "image/png", "IMG_1.JPG.png"),
        ("README", "text/plain", "README"),
    ],
)
def test_a_name_gets_the_extension_of_what_its_bytes_are(
    raw: str, content_type: str, saved: str
) -> None:
    assert safe_filename(raw, content_type) == saved


def test_long_names_keep_their_extension() -> None:
    name = display_name("n" * 500 + ".docx")
    assert len(name) == 200 and name.endswith(".docx")


def test_an_archive_that_the_zip_reader_cannot_open_is_bad_input() -> None:
    # Found by fuzzing: an entry that needs a newer zip version than Python reads.
    data = bytearray(
        _zip(("mimetype", "application/vnd.oasis.opendocument.text"), ("content.xml", "<x/>"))
    )
    for signature in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.find(signature)
        # "version needed to extract": offset 4 in a local header, 6 in the central one.
        field = at + (4 if signature == b"PK\x03\x04" else 6)
        data[field : field + 2] = (99).to_bytes(2, "little")
    with pytest.raises(BadInput):
        detect(io.BytesIO(bytes(data)))


def test_the_many_entries_docx_of_these_tests_is_what_zipfile_writes_and_reads() -> None:
    # The helper packs zipfile's records itself, for speed: the same bytes as zipfile's
    # writer, and over 65,535 entries a ZIP64 archive that zipfile reads back whole.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in [*DOCX_PARTS.items(), ("word/0", b"")]:
            archive.writestr(zipfile.ZipInfo(name), data)
    assert many_entries_docx(3) == out.getvalue()
    with zipfile.ZipFile(io.BytesIO(many_entries_docx(65_537))) as archive:
        names = archive.namelist()
        assert archive.read("word/document.xml") == DOCX_PARTS["word/document.xml"]
    assert len(names) == 65_537 and names[-1] == f"word/{65_534:x}"


def test_a_zip64_archive_of_many_entries_is_refused_before_zipfile_reads_it() -> None:
    data = many_entries_docx(70_000)  # over 65,535: the count is in the ZIP64 record
    assert b"PK\x06\x06" in data[-200:]
    tracemalloc.start()
    try:
        with pytest.raises(BadInput, match="too many entries"):
            detect(io.BytesIO(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # zipfile's objects for 70,000 entries would take ~30 MiB; the directory read is ~3.
    assert peak < 8 * 1024 * 1024, peak


def test_an_end_record_that_understates_the_entries_does_not_hide_them() -> None:
    data = bytearray(many_entries_docx(MAX_ZIP_ENTRIES + 1))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (3).to_bytes(2, "little") * 2  # entries on this disk, in all
    with pytest.raises(BadInput, match="too many entries"):
        detect(io.BytesIO(bytes(data)))


def test_an_office_document_with_thousands_of_parts_is_accepted() -> None:
    assert detect(io.BytesIO(many_entries_docx(MAX_ZIP_ENTRIES))).content_type == WORD


def test_a_zip_without_an_end_record_is_bad_input() -> None:
    data = docx()
    with pytest.raises(BadInput, match="damaged"):
        detect(io.BytesIO(data[: data.rfind(b"PK\x05\x06")]))


# Pillow's progressive colour JPEG has 10 scans of its own.
AT_THE_LIMIT = many_scans_jpeg((64, 64), MAX_JPEG_SCANS - 10)
PAST_THE_LIMIT = many_scans_jpeg((64, 64), MAX_JPEG_SCANS - 9)


def test_a_jpeg_of_more_scans_than_an_encoder_writes_is_refused() -> None:
    assert detect(io.BytesIO(AT_THE_LIMIT)).content_type == "image/jpeg"
    with pytest.raises(BadInput, match="scans"):
        detect(io.BytesIO(PAST_THE_LIMIT))
    # Fill bytes before a marker (a decoder skips any number) hide no scan, even
    # where they run past what is read at once.
    padded = PAST_THE_LIMIT.replace(b"\xff\xda", b"\xff" * 70_000 + b"\xff\xda")
    with pytest.raises(BadInput, match="scans"):
        detect(io.BytesIO(padded))


def test_only_a_jpeg_s_own_scans_count() -> None:
    # The bytes of a scan marker inside a segment (an application's data) and after
    # the end (a phone's motion-photo video) are no scans: a decoder never reads them.
    inside = b"\xff\xe5" + (2 + 60_000).to_bytes(2, "big") + b"\xff\xda" * 30_000
    after = b"\xff\xda\x00\x08" * 1000
    photo = AT_THE_LIMIT[:2] + inside + AT_THE_LIMIT[2:] + after
    assert detect(io.BytesIO(photo)).content_type == "image/jpeg"
    # Empty comments, each a step for the counter (and for Pillow): a bound of their own.
    comments = b"\xff\xfe\x00\x02" * (MAX_JPEG_SEGMENTS + 1)
    with pytest.raises(BadInput, match="segments"):
        detect(io.BytesIO(AT_THE_LIMIT[:2] + comments + AT_THE_LIMIT[2:]))
