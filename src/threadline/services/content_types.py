"""What an uploaded file is, decided from its bytes alone (never the client's type or name).
Only images, video, audio, PDF, plain text and common office documents are accepted;
everything else, notably executables, HTML and SVG, is refused."""

from __future__ import annotations

import re
import struct
import unicodedata
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

import puremagic
from PIL import Image
from PIL.ExifTags import Base

from threadline.errors import BadInput
from threadline.models import AttachmentKind

HEAD_BYTES = 64 * 1024
MAX_FILENAME = 200
# Pillow's own decompression-bomb limit (it warns past it, refuses past twice it):
# 358 MB once decoded, in every reader's browser.
MAX_IMAGE_PIXELS = 89_478_485

# Formats phones send that Pillow may not read without a plugin: kept without a size.
IMAGES_WITHOUT_SIZE = {"image/avif", "image/heic", "image/heif"}
# The kind of an accepted media type (a key of EXTENSIONS), by its top-level type.
MEDIA_KINDS = {
    "image": AttachmentKind.IMAGE,
    "video": AttachmentKind.VIDEO,
    "audio": AttachmentKind.AUDIO,
}
# puremagic's names for the same formats, spelled as browsers expect them.
ALIASES = {
    "application/ogg": "audio/ogg",
    "audio/wave": "audio/wav",
    "audio/x-wav": "audio/wav",
    "audio/x-flac": "audio/flac",
    "application/x-matroska": "video/x-matroska",
    "image/x-ms-bmp": "image/bmp",
    "image/jpg": "image/jpeg",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "audio/mp3": "audio/mpeg",
    "video/x-m4v": "video/mp4",
}
PDF = "application/pdf"
TEXT = "text/plain"
WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
EXCEL = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
POWERPOINT = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
# Office Open XML: the part folder inside the zip says which application wrote it.
OOXML_PARTS = {"word/": WORD, "xl/": EXCEL, "ppt/": POWERPOINT}
ODF = "application/vnd.oasis.opendocument."  # the types' common prefix
# Legacy binary Office files (OLE): the name of the main stream, as UTF-16LE.
OLE_STREAMS = {
    "WordDocument": "application/msword",
    "Workbook": "application/vnd.ms-excel",
    "Book": "application/vnd.ms-excel",
    "PowerPoint Document": "application/vnd.ms-powerpoint",
}
# Text that browsers render as documents: refused even when puremagic names it.
MARKUP = {"text/html", "text/xml", "text/xsl", "text/x-sgml"}
# Each scan of a progressive JPEG is a pass of the decoder over every block of the image
# (in Pillow's libjpeg and in every reader's browser), and a scan of empty blocks is a few
# bytes: 400 such scans in a 107 KB file kept Pillow busy 10 s and Chromium 13 s (16
# megapixels), 1,000 at the pixel limit Pillow 125 s. Encoders write at most 18
# (libjpeg's progression for CMYK; 10 for colour). Segments are bounded too: each is a
# step of the count.
MAX_JPEG_SCANS = 32
MAX_JPEG_SEGMENTS = 2000
_JPEG_WINDOW = 64 * 1024
# 0xFF not followed by a stuffed 0x00 (scan data), TEM or a restart marker RST0-7
# (in scan data too): a marker, maybe after more 0xFF fill bytes.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd7]")
_JPEG_FILL = re.compile(rb"\xff*")
_JPEG_NO_LENGTH = frozenset({0x00, 0x01, *range(0xD0, 0xD8)})
_SOS, _EOI = 0xDA, 0xD9
# The names each accepted type may be saved under (lower case, the first one added to a
# name that has another): the receiver's machine opens a saved file by its name, so a
# text file named invite.html opens as a page and one named setup.js runs (Windows).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image/png": ("png", "apng"),
    "image/jpeg": ("jpg", "jpeg", "jpe", "jfif"),
    "image/gif": ("gif",),
    "image/webp": ("webp",),
    "image/bmp": ("bmp", "dib"),
    "image/avif": ("avif",),
    "image/heic": ("heic", "heif", "hif"),
    "image/heif": ("heif", "heic", "hif"),
    "video/mp4": ("mp4", "m4v", "m4a", "mov", "3gp"),
    "video/webm": ("webm", "mkv"),
    "video/quicktime": ("mov", "qt", "mp4", "m4v"),
    "video/x-matroska": ("mkv", "mka", "webm"),
    "video/3gpp": ("3gp", "3gpp", "3g2", "mp4"),
    "video/x-msvideo": ("avi",),
    "audio/mpeg": ("mp3", "mpga", "mp2"),
    "audio/ogg": ("ogg", "oga", "ogv", "opus", "spx"),
    "audio/wav": ("wav", "wave"),
    "audio/flac": ("flac",),
    "audio/aac": ("aac", "adts", "m4a"),
    "audio/mp4": ("m4a", "m4b", "mp4", "aac"),
    "audio/webm": ("weba", "webm"),
    PDF: ("pdf",),
    TEXT: (
        "txt",
        "text",
        "log",
        "md",
        "markdown",
        "csv",
        "tsv",
        "json",
        "yaml",
        "yml",
        "toml",
        "ini",
        "cfg",
        "conf",
        "rst",
        "srt",
        "vtt",
        "diff",
        "patch",
    ),
    WORD: ("docx",),
    EXCEL: ("xlsx",),
    POWERPOINT: ("pptx",),
    f"{ODF}text": ("odt",),
    f"{ODF}spreadsheet": ("ods",),
    f"{ODF}presentation": ("odp",),
    "application/msword": ("doc",),
    "application/vnd.ms-excel": ("xls",),
    "application/vnd.ms-powerpoint": ("ppt",),
}
ZIP_MAGIC = b"PK\x03\x04"
# Office documents have at most a few thousand parts, but zipfile builds ~500 bytes per
# central-directory entry before we see a name: a zip of a few hundred thousand empty
# entries costs hundreds of MiB. Both bounds are checked first (APPNOTE.TXT 4.3.12-16).
MAX_ZIP_ENTRIES = 5000
MAX_CENTRAL_DIRECTORY_BYTES = 2 * 1024 * 1024
_EOCD = struct.Struct("<4s4H2LH")  # signature .. comment length: 22 bytes
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes, just before the EOCD
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes, just before the locator
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")  # 46 bytes, then name, extra, comment
_CENTRAL_HEADER_SIGNATURE = b"PK\x01\x02"
OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")


@dataclass(frozen=True, slots=True)
class Detected:
    content_type: str
    kind: AttachmentKind
    width: int | None = None
    height: int | None = None
    orientation: int = 1  # EXIF: 1 shows the pixels as stored, 2 to 8 turn or mirror them


# The EXIF orientations shown a quarter turn from the stored pixels.
SIDEWAYS = range(5, 9)


def detect(file: BinaryIO) -> Detected:
    """The content type, kind and image size of a seekable file; BadInput if refused.
    Blocking: run it in a worker thread."""
    file.seek(0)
    head = file.read(HEAD_BYTES)
    if not head:
        raise BadInput("The file is empty")
    if head.startswith(ZIP_MAGIC):
        return Detected(_office_zip(file), AttachmentKind.DOCUMENT)
    if head.startswith(OLE_MAGIC):
        return Detected(_office_ole(head), AttachmentKind.DOCUMENT)
    found = _signature(head)
    if found is None or (found.startswith("text/") and found not in MARKUP):
        # puremagic has no signature for text, but names some by their first bytes.
        return Detected(_plain_text(head), AttachmentKind.DOCUMENT)
    if found == "image/jpeg":
        _check_jpeg_scans(file)
    kind = MEDIA_KINDS.get(found.partition("/")[0]) if found in EXTENSIONS else None
    if kind is AttachmentKind.IMAGE:
        return read_image(file, found)
    if kind is not None:
        return Detected(found, kind)
    if found == PDF:
        return Detected(found, AttachmentKind.DOCUMENT)
    raise _refused(found)


def _signature(head: bytes) -> str | None:
    """puremagic's best guess, or None when no signature matches (maybe text); a match
    with no MIME type (an ELF binary, for one) is still a match: refused."""
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return None
    if not matches:
        return None
    best = max(matches, key=lambda m: m.confidence)
    mime = str(best.mime_type or "").lower()
    return ALIASES.get(mime, mime) or f"an unknown binary format ({best.name or 'unnamed'})"


def _office_zip(file: BinaryIO) -> str:
    """An OOXML or ODF document told by its parts; any other archive is refused."""
    _check_central_directory(file)
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            if "mimetype" in names:
                # A bounded read: the entry may be a decompression bomb.
                with archive.open("mimetype") as entry:
                    declared = entry.read(100).decode("ascii", "replace").strip()
                if declared.startswith(ODF) and declared in EXTENSIONS:
                    return declared
            if "[Content_Types].xml" in names:
                for prefix, content_type in OOXML_PARTS.items():
                    if any(name.startswith(prefix) for name in names):
                        return content_type
    except Exception:  # any parser failure on untrusted bytes (zipfile raises many kinds)
        raise _damaged() from None
    raise _refused("a zip archive")


def _check_central_directory(file: BinaryIO) -> None:
    """BadInput unless the central directory is small and lists few entries, read where
    zipfile will read it (the EOCD record, or ZIP64's, then the directory before it), its
    entries counted by walking their headers: an EOCD that understates them changes nothing."""
    size = file.seek(0, 2)
    tail_start = max(0, size - _EOCD.size - 0xFFFF)
    file.seek(tail_start)
    tail = file.read()
    at = tail.rfind(_EOCD_SIGNATURE)
    while at >= 0 and at + _EOCD.size > len(tail):
        at = tail.rfind(_EOCD_SIGNATURE, 0, at)
    if at < 0:
        raise _damaged()
    _, _, _, _, entries, directory_bytes, _, _ = _EOCD.unpack_from(tail, at)
    directory_end = tail_start + at
    if entries == 0xFFFF or directory_bytes == 0xFFFFFFFF:
        locator_at = directory_end - _ZIP64_LOCATOR.size
        record_at = locator_at - _ZIP64_EOCD.size
        if record_at < 0:
            raise _damaged()
        file.seek(record_at)
        record = file.read(_ZIP64_EOCD.size + _ZIP64_LOCATOR.size)
        if (
            record[: len(_ZIP64_EOCD_SIGNATURE)] != _ZIP64_EOCD_SIGNATURE
            or record[_ZIP64_EOCD.size :][:4] != _ZIP64_LOCATOR_SIGNATURE
        ):
            raise _damaged()
        entries, directory_bytes = _ZIP64_EOCD.unpack_from(record)[7:9]
        directory_end = record_at
    if entries > MAX_ZIP_ENTRIES or directory_bytes > MAX_CENTRAL_DIRECTORY_BYTES:
        raise _too_many_entries()
    if directory_bytes > directory_end:
        raise _damaged()
    file.seek(directory_end - directory_bytes)
    directory = file.read(directory_bytes)
    offset = counted = 0
    while offset + _CENTRAL_HEADER.size <= len(directory):
        header = _CENTRAL_HEADER.unpack_from(directory, offset)
        if header[0] != _CENTRAL_HEADER_SIGNATURE:
            break  # zipfile will say what is wrong
        counted += 1
        if counted > MAX_ZIP_ENTRIES:
            raise _too_many_entries()
        offset += _CENTRAL_HEADER.size + header[12] + header[13] + header[14]


def _damaged() -> BadInput:
    return BadInput("The file is a damaged or unsupported archive")


def _too_many_entries() -> BadInput:
    return BadInput(
        f"The archive has too many entries for an office document (at most {MAX_ZIP_ENTRIES})"
    )


def _office_ole(head: bytes) -> str:
    for stream, content_type in OLE_STREAMS.items():
        if stream.encode("utf-16-le") in head:
            return content_type
    raise _refused("an OLE compound file that is not a Word, Excel or PowerPoint document")


def _plain_text(head: bytes) -> str:
    """text/plain when the first bytes are UTF-8 text that no browser would take for markup."""
    text = head.decode("utf-8", errors="ignore") if _utf8_prefix(head) else None
    if text is None or "\x00" in text:
        raise _refused("an unknown binary format")
    start = text.lstrip("\ufeff \t\r\n\f").lower()
    if start.startswith("<"):
        # HTML, SVG and XML without a signature puremagic knows: browsers sniff these.
        raise _refused("markup (HTML, SVG or XML)")
    if start.startswith("#!"):
        raise _refused("an executable script")
    controls = sum(
        1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\x1b"
    )
    if controls > len(text) // 100:
        raise _refused("an unknown binary format")
    return TEXT


def _utf8_prefix(head: bytes) -> bool:
    """Valid UTF-8, allowing a character cut off at the end of the sample."""
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            if len(head) < HEAD_BYTES:  # the whole file: no cut-off character
                return False
            continue
        return True
    return False


def read_image(file: BinaryIO, content_type: str) -> Detected:
    """An image's size as shown and orientation, from its header; BadInput if unreadable."""
    file.seek(0)
    try:
        with Image.open(file) as image:
            width, height = image.size
            orientation = _orientation(image)
    except Exception as exc:  # any parser failure on untrusted bytes
        if isinstance(exc, Image.DecompressionBombError):
            raise _too_many_pixels() from None
        if content_type in IMAGES_WITHOUT_SIZE:
            return Detected(content_type, AttachmentKind.IMAGE)
        raise BadInput("The file is not a readable image") from None
    # Pillow only warns up to twice its limit; every reader's browser decodes it all.
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_many_pixels()
    if orientation in SIDEWAYS:  # the size as shown: a client's placeholder takes its shape
        width, height = height, width
    return Detected(content_type, AttachmentKind.IMAGE, int(width), int(height), orientation)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, read without decoding the pixels: a PNG's eXIf chunk after
    its image data is not seen (Pillow decodes the whole image to reach it)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(Base.Orientation, 1)
    except Exception:  # a damaged EXIF block: the picture is shown as stored
        return 1
    return value if isinstance(value, int) else 1


def _check_jpeg_scans(file: BinaryIO) -> None:
    """BadInput past MAX_JPEG_SCANS scans before the end marker, counted as libjpeg
    reads them: each segment skipped by its length, scan data up to the next marker.
    Bytes inside a segment (an EXIF thumbnail, an ICC profile) or after the end (a
    phone's motion-photo video) are never taken for scans. Blocking."""
    window, start = b"", 2  # ``window`` holds the file's bytes from ``start``, past SOI
    at = start  # where the next marker is looked for
    scans = segments = 0
    while True:
        found = _JPEG_MARKER.search(window, at - start)
        # The marker's code follows any fill bytes; its length, two bytes, follows that.
        fill = _JPEG_FILL.match(window, found.start()) if found else None
        code_at = fill.end() if fill else len(window)
        if code_at + 3 > len(window):
            # Read on from the last 0xFF (more fill, a code or a length may follow);
            # no further bytes: the file ends.
            end = start + len(window)
            resume = start + code_at - 1 if found else max(at, end - 1)
            file.seek(resume)
            window, start = file.read(_JPEG_WINDOW), resume
            if start + len(window) <= end:
                return
            continue
        code = window[code_at]
        if code in _JPEG_NO_LENGTH:
            at = start + code_at + 1
            continue
        if code == _EOI:
            return
        segments += 1
        scans += code == _SOS
        if scans > MAX_JPEG_SCANS or segments > MAX_JPEG_SEGMENTS:
            raise BadInput(
                f"The JPEG has more than {MAX_JPEG_SCANS} scans (or {MAX_JPEG_SEGMENTS} "
                "segments): each scan is a pass over the whole image for every reader. "
                "Save it again as an ordinary JPEG"
            )
        at = start + code_at + 1 + int.from_bytes(window[code_at + 1 : code_at + 3], "big")


def _too_many_pixels() -> BadInput:
    return BadInput(f"The image has too many pixels (at most {MAX_IMAGE_PIXELS})")


def _refused(what: str) -> BadInput:
    return BadInput(
        f"This file type is not accepted ({what}): send images, video, audio, PDF, "
        "plain text or office documents"
    )


def display_name(raw: str | None, fallback: str = "file") -> str:
    """A file name safe to show and to put in a header: no path, no control characters,
    NFC, at most MAX_FILENAME characters (the extension kept)."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in {"C", "Z"} or ch == " ")
    name = " ".join(name.split()).strip(" .")
    if not name:
        return fallback
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:MAX_FILENAME]
    return name


def safe_filename(raw: str | None, content_type: str) -> str:
    """display_name(raw), with the type's own extension added when the name has another
    one (EXTENSIONS): saved, the file opens as what its bytes are, never as a page or
    a program. A name without an extension is kept."""
    name = display_name(raw)
    _, dot, extension = name.rpartition(".")
    allowed = EXTENSIONS.get(content_type)
    if not dot or allowed is None or extension.lower() in allowed:
        return name
    return display_name(f"{name}.{allowed[0]}")
