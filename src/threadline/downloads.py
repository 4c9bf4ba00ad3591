"""Signed downloads: GET and HEAD /attachments/{id}/{filename} and /previews/{id}
(?exp=..&sig=..&u=..), for a viewer who still sees the attachment's thread."""

from __future__ import annotations

import re
import uuid
from functools import partial
from pathlib import PurePosixPath
from typing import Final, Literal
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from threadline.errors import ServiceUnavailable
from threadline.runtime import Runtime
from threadline.services import attachments, content_types, previews

INLINE_PREFIXES = ("image/", "video/", "audio/")
PREVIEW_TYPE = "image/webp"
# The file is data, never a document: no scripts, no plugins, no framing.
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"
UNSATISFIABLE: Final = "unsatisfiable"
# A missing preview whose render waited too long for the render thread: soon, again.
RETRY_PREVIEW_SECONDS = 5
# ASCII digits (\d takes any script's), at most 18: int() never meets a huge string.
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


async def _serve(request: Request, *, preview: bool) -> Response:
    runtime: Runtime = request.app.state.runtime
    attachment_id = request.path_params["attachment_id"]
    signed = None if preview else request.path_params["filename"]
    query = request.query_params
    viewer = query.get("u", "")
    left = runtime.url_signer.check(
        attachment_id, signed, query.get("exp", ""), query.get("sig", ""), viewer
    )
    if left is None:
        return PlainTextResponse("This link is invalid or has expired", status_code=403)
    try:
        aid, viewer_id = uuid.UUID(attachment_id), uuid.UUID(viewer)
    except ValueError:
        return PlainTextResponse("Not found", status_code=404)
    try:
        async with runtime.db.reading() as session:
            row = await attachments.downloadable_by(session, aid, viewer_id)
        key = None if row is None else row.preview_key if preview else row.storage_key
        size = await runtime.storage.size(key) if key is not None else None
        if preview and row is not None and key is not None and size is None:
            # The preview's file is gone (an old backup restored, a lost disk): made again.
            remade = await runtime.preview_repairs.remake(row)
            key, size = (remade.key, remade.size) if remade is not None else (None, None)
    except ServiceUnavailable as exc:
        # What GraphQL says as SERVICE_UNAVAILABLE: try again shortly, not a crash (500).
        return _later(exc.message, exc.retry_after)
    except previews.RendererBusy:
        return _later("The preview is being made: try again shortly", RETRY_PREVIEW_SECONDS)
    if row is None or key is None or size is None:
        return PlainTextResponse("Not found", status_code=404)

    content_type = PREVIEW_TYPE if preview else row.content_type
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    name = content_types.safe_filename(row.filename, row.content_type)
    if preview:
        name = f"{PurePosixPath(name).stem}.webp"
    disposition = "inline" if content_type.startswith(INLINE_PREFIXES) else "attachment"
    headers = {
        "content-type": content_type,
        # Checked again: a row stored before names were checked keeps its client's name.
        "content-disposition": f"{disposition}; filename*=UTF-8''{quote(name, safe='')}",
        "x-content-type-options": "nosniff",
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "cache-control": f"private, max-age={left}",
        "referrer-policy": "no-referrer",
        "accept-ranges": "bytes",
    }
    wanted = _byte_range(request.headers.get("range"), size)
    if wanted == UNSATISFIABLE:
        return Response(
            status_code=416,
            headers={**headers, "content-range": f"bytes */{size}", "content-length": "0"},
        )
    start, end, status = 0, size, 200
    if wanted is not None:
        start, end = wanted
        status = 206
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    headers["content-length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return StreamingResponse(
        runtime.storage.read(key, start, end), status_code=status, headers=headers
    )


download = partial(_serve, preview=False)
preview = partial(_serve, preview=True)


def _later(message: str, seconds: int) -> Response:
    return PlainTextResponse(message, status_code=503, headers={"retry-after": str(seconds)})


def _byte_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """(start, end exclusive) of one ``bytes=`` range; None serves the whole file
    (no header, several ranges or one we do not understand, as RFC 9110 allows)."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            return UNSATISFIABLE
        return max(0, size - length), size
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        return UNSATISFIABLE
    return start, size if not last else min(size, int(last) + 1)
