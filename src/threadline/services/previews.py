"""Previews of large or turned images: a WebP at most PREVIEW_SIDE pixels on its longer
side, turned as its EXIF orientation says, shown inline (the file opens on demand).
A browser decodes every pixel of an image it shows, however small: an accepted image
of 89 million pixels costs each reader about 360 MB. And Chromium turns a JPEG by its
EXIF orientation, but a WebP as stored."""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from PIL import Image, ImageOps
from PIL.ExifTags import Base

from threadline.metrics import PREVIEW_RENDERS

log = logging.getLogger(__name__)

PREVIEW_SIDE = 1280
QUALITY = 80
# The EXIF orientations that turn or mirror the stored pixels (1 shows them as stored).
TURNED = range(2, 9)
# Decoding a large PNG holds the whole image in memory (up to about 360 MB, twice that
# while an RGBA one is resized: ~750 MB at the pixel limit): one at a time per process,
# in a thread of its own so that file I/O elsewhere never waits on it.
_RENDERER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threadline-preview")
# An upload waits this long for its preview at most: renders queue for the one thread,
# seconds each, and a queue that uploads fill faster than it drains never ends.
RENDER_WAIT_SECONDS = 15.0


def wanted(width: int | None, height: int | None, orientation: int = 1) -> bool:
    """Whether an image of this size (None: unknown) and EXIF orientation gets a preview."""
    return max(width or 0, height or 0) > PREVIEW_SIDE or orientation in TURNED


class RendererBusy(Exception):
    """The render thread stayed busy for RENDER_WAIT_SECONDS: try again later."""


async def render(file: BinaryIO) -> bytes | None:
    """The preview of an accepted image, or None when the image is small and shown as
    stored (it is its own preview), cannot be decoded, or is animated (clients then show
    the file). RendererBusy when the renderer stayed busy for RENDER_WAIT_SECONDS."""
    job = asyncio.get_running_loop().run_in_executor(_RENDERER, _render, file)
    try:
        # A timeout cancels a queued render; a running one ends by itself, its result unused.
        preview = await asyncio.wait_for(job, RENDER_WAIT_SECONDS)
    except TimeoutError:
        PREVIEW_RENDERS.labels("busy").inc()
        log.warning("no preview: the renderer was busy for %.0f s", RENDER_WAIT_SECONDS)
        raise RendererBusy from None
    PREVIEW_RENDERS.labels("none" if preview is None else "made").inc()
    return preview


def _render(file: BinaryIO) -> bytes | None:
    file.seek(0)
    try:
        with Image.open(file) as image:
            # An animation's preview would be its first frame: clients show the file.
            orientation = image.getexif().get(Base.Orientation, 1)
            if not wanted(*image.size, orientation) or getattr(image, "is_animated", False):
                return None
            # JPEG decodes at a reduced scale; other formats decode whole.
            image.draft("RGB", (PREVIEW_SIDE, PREVIEW_SIDE))
            icc = image.info.get("icc_profile")
            shown = _resizable(image)
            if shown is not image:
                image.close()  # the decoded original: hundreds of MB at the pixel limit
            shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
            # Browsers turn a photo by its EXIF orientation: so must its preview (turned
            # once small: turning first copied the whole decoded image).
            shown = ImageOps.exif_transpose(shown)
            if shown.mode not in ("RGB", "RGBA"):
                shown = shown.convert("RGB")
            out = io.BytesIO()
            # The colours as the file's profile says (a wide-gamut photo's preview would be
            # dull without it); a CMYK or grey profile does not describe the RGB preview.
            rgb_profile = isinstance(icc, bytes) and icc[16:20] == b"RGB "
            shown.save(out, "WEBP", quality=QUALITY, icc_profile=icc if rgb_profile else None)
    except Exception:  # any decoder failure on untrusted bytes
        log.info("no preview: the image could not be decoded", exc_info=True)
        return None
    return out.getvalue()


def _resizable(image: Image.Image) -> Image.Image:
    """``image`` in a mode that resizes faithfully: a palette resizes by nearest pixel
    (text turns ragged), 16-bit grey converts by clipping at 255 (near white), and a
    transparent colour blurs into its neighbours (the transparency is lost)."""
    if image.mode.startswith("I"):
        return image.point(lambda value: value / 256).convert("L")
    if "transparency" in image.info or image.mode in ("PA", "LA", "La", "RGBa"):
        return image if image.mode == "RGBA" else image.convert("RGBA")
    if image.mode in ("P", "1"):
        return image.convert("RGB")
    return image
