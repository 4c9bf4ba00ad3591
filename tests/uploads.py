"""Helpers for attachment tests: real multipart requests and sample files."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import httpx
from PIL import ExifTags, Image

from tests.conftest import Api

UPLOAD = """
mutation($t: ID!, $file: Upload!) {
  uploadAttachment(threadId: $t, file: $file) {
    id filename contentType size kind width height url previewUrl message { id } uploadedBy { id }
  }
}
"""
PREFLIGHT = {"apollo-require-preflight": "true"}


async def post_upload(
    api: Api,
    thread_id: str,
    filename: str,
    data: bytes,
    *,
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One GraphQL multipart request (operations, map, then the file), as clients send it."""
    operations = {"query": UPLOAD, "variables": {"t": thread_id, "file": None}}
    all_headers = dict(PREFLIGHT if headers is None else headers)
    if api.token:
        all_headers["authorization"] = f"Bearer {api.token}"
    return await api.http.post(
        "/graphql",
        data={
            "operations": json.dumps(operations),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": (filename, data, content_type)},
        headers=all_headers,
    )


async def upload(api: Api, thread_id: str, filename: str, data: bytes, **kw: Any) -> dict[str, Any]:
    response = await post_upload(api, thread_id, filename, data, **kw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body
    result: dict[str, Any] = body["data"]["uploadAttachment"]
    return result


async def upload_error(api: Api, thread_id: str, filename: str, data: bytes, **kw: Any) -> str:
    response = await post_upload(api, thread_id, filename, data, **kw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("errors"), body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


def image(fmt: str = "PNG", size: tuple[int, int] = (7, 5)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


def oriented(fmt: str, size: tuple[int, int], orientation: int) -> bytes:
    """An image whose EXIF orientation is ``orientation`` (6: shown turned 90° clockwise)."""
    out = io.BytesIO()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    Image.new("RGB", size, (10, 120, 200)).save(out, fmt, exif=exif)
    return out.getvalue()


def many_scans_jpeg(size: tuple[int, int], scans: int) -> bytes:
    """A progressive colour JPEG (Pillow's 10 scans) and ``scans`` more that each make
    the decoder visit every block of the image and change nothing: each is one AC
    code after another, each code a run of 32,767 empty blocks, a few bytes a scan."""
    out = io.BytesIO()
    Image.new("RGB", size, (128, 128, 128)).save(out, "JPEG", progressive=True)
    picture = out.getvalue()
    # AC table 1: one code, the bit 0, for 0xE0 (a run of 2**14 + the next 14 bits).
    table = b"\xff\xc4\x00\x14\x11\x01" + bytes(15) + b"\xe0"
    # Component 1 (Y), DC table 0 and AC table 1; coefficients 1-63, refining bit 0.
    header = b"\xff\xda\x00\x08\x01\x01\x01\x01\x3f\x10"
    blocks = -(-size[0] // 8) * -(-size[1] // 8)
    bits = "0" + "1" * 14
    bits *= -(-blocks // 32767)
    bits += "1" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    return picture[:-2] + table + (header + data) * scans + picture[-2:]


def pdf() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (10, 10)).save(out, "PDF")
    return out.getvalue()


def mp4_header() -> bytes:
    # An ISO base media file: an ftyp box (brand isom) and an empty mdat box.
    ftyp = b"ftypisom" + b"\x00\x00\x02\x00" + b"isomiso2avc1mp41"
    return len(ftyp + b"1234").to_bytes(4, "big") + ftyp + b"\x00\x00\x00\x08mdat"


def docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


DOCX_PARTS = {"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"}


def many_entries_docx(entries: int) -> bytes:
    """A .docx-looking zip of ``entries`` parts (the two of DOCX_PARTS, the others empty):
    a huge central directory, with the ZIP64 end records over 65,535 entries.

    The records are the ones zipfile writes for ``writestr(ZipInfo(name), data)`` (stored,
    dated 1980-01-01), packed here at once: zipfile took 3 s for 250,000 entries.
    """
    parts = [*DOCX_PARTS.items(), *((f"word/{i:x}", b"") for i in range(entries - 2))]
    local: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for name, data in parts:
        encoded, crc, size = name.encode(), zipfile.crc32(data), len(data)
        header = struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 33, crc, size, size, len(encoded), 0
        )
        local += [header, encoded, data]
        central += [
            struct.pack(
                "<4s4B4HL2L5H2L",
                *(b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 33, crc, size, size, len(encoded)),
                *(0, 0, 0, 0, 0o600 << 16, offset),  # external attributes: rw-------
            ),
            encoded,
        ]
        offset += len(header) + len(encoded) + size
    directory = b"".join(central)
    count, end = len(parts), b""
    if count > 0xFFFF:
        end = struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), offset
        )
        end += struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(directory), 1)
        count = 0xFFFF
    end += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    return b"".join(local) + directory + end


def plain_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return out.getvalue()


def elf() -> bytes:
    return Path("/bin/ls").read_bytes()[:8192]


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
