"""Helpers for attachment tests: real multipart requests and sample files."""

from __future__ import annotations

import io
import json
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


def many_entries_docx(entries: int) -> bytes:
    """A .docx-looking zip of ``entries`` empty parts: a huge central directory.

    Over 65,535 entries Python writes the ZIP64 end records.
    """
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
        for i in range(entries - 2):
            archive.writestr(zipfile.ZipInfo(f"word/{i:x}"), b"")
    return out.getvalue()


def plain_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return out.getvalue()


def elf() -> bytes:
    return Path("/bin/ls").read_bytes()[:8192]


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
