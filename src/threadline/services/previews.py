"""Previews of large images: a WebP at most PREVIEW_SIDE pixels on its longer side.

A browser decodes every pixel of an image it shows, however small it draws it: an
accepted image of 89 million pixels costs each reader about 360 MB, and a thread of
them gigabytes. Clients show the preview inline and open the file itself on demand.
"""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from PIL import Image, ImageOps

log = logging.getLogger(__name__)

PREVIEW_SIDE = 1280
QUALITY = 80
# Decoding a large PNG holds the whole image in memory (up to about 360 MB): one at a
# time per process, in a thread of its own so that file I/O elsewhere never waits on it.
_RENDERER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threadline-preview")


async def render(file: BinaryIO) -> bytes | None:
    """The preview of an accepted image, or None when it is small enough to be its own
    or cannot be decoded (the upload stands: clients then show the file)."""
    return await asyncio.get_running_loop().run_in_executor(_RENDERER, _render, file)


def _render(file: BinaryIO) -> bytes | None:
    file.seek(0)
    try:
        with Image.open(file) as image:
            if max(image.size) <= PREVIEW_SIDE:
                return None
            # JPEG decodes at a reduced scale; other formats decode whole.
            image.draft("RGB", (PREVIEW_SIDE, PREVIEW_SIDE))
            # Browsers turn a photo by its EXIF orientation: so must its preview.
            shown = ImageOps.exif_transpose(image)
            shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
            if shown.mode not in ("RGB", "RGBA"):
                has_alpha = shown.mode in ("LA", "PA") or "transparency" in shown.info
                shown = shown.convert("RGBA" if has_alpha else "RGB")
            out = io.BytesIO()
            shown.save(out, "WEBP", quality=QUALITY)
    except Exception:  # any decoder failure on untrusted bytes
        log.info("no preview: the image could not be decoded", exc_info=True)
        return None
    return out.getvalue()
