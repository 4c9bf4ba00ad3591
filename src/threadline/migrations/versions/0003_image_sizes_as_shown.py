"""Image attachments stored before their size was the size as shown get that size.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Before commit ac4ecf7, an image whose EXIF orientation turns it a quarter (5 to 8) kept
its pixels' width and height; since, they are swapped. No column says which rows are
older, so each image row that is not square is opened again, its pixels not decoded, from the
upload directory the migrating command was given (none: nothing is read), and takes the
size as shown only while it holds that size swapped: a row stored since, or fixed by an
earlier run, is left alone. A missing or unreadable file leaves its row as it was; a
missing upload directory stops the migration (rows to read, nowhere to read them).
"""

import errno
import logging
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from PIL import Image

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500  # rows in memory at a time
SIDEWAYS = range(5, 9)  # EXIF orientations that turn the picture a quarter
attachments = sa.table(
    "attachments",
    sa.column("id", sa.Uuid()),
    sa.column("kind", sa.String()),
    sa.column("width", sa.Integer()),
    sa.column("height", sa.Integer()),
    sa.column("storage_key", sa.String()),
)


def _pixels_and_orientation(root: Path, key: str) -> tuple[int, int, int]:
    """Width, height and EXIF orientation as the application read them at 0003 (copied,
    not imported: a revision must run the same however that code changes later)."""
    if not key or "/" not in key or ".." in key or key.startswith("/"):
        raise ValueError("not a storage key")  # a tampered row must not escape root
    with (root / key).open("rb") as file, Image.open(file) as image:
        if image.format == "PNG" and "exif" not in image.info:
            return (*image.size, 1)
        try:
            orientation = image.getexif().get(0x0112, 1)  # the Orientation tag
        except Exception:  # a damaged EXIF block: the picture is shown as stored
            orientation = 1
        return (*image.size, orientation if isinstance(orientation, int) else 1)


def upgrade() -> None:
    config = op.get_context().config
    upload_dir: Path | None = config.attributes.get("upload_dir") if config else None
    if upload_dir is None:
        return
    root, bind, c, unread = upload_dir.resolve(), op.get_bind(), attachments.c, 0
    query = (
        sa.select(attachments)
        .where(c.kind == "IMAGE", c.width != c.height)
        .order_by(c.id)
        .limit(BATCH)
    )
    rows = bind.execute(query).all()
    if rows and not upload_dir.is_dir():
        # Done without the files, this revision would never run again: refused until it is there.
        reason = "no such folder: revision 0003 reads image files there (set UPLOAD_DIR)"
        raise FileNotFoundError(errno.ENOENT, reason, str(upload_dir))
    while rows:
        for row in rows:
            try:
                width, height, orientation = _pixels_and_orientation(root, row.storage_key)
            except Exception:  # any parser failure on stored bytes
                unread += 1
                continue
            # Still its pixels' size: the size as shown is that swapped.
            if orientation in SIDEWAYS and (row.width, row.height) == (width, height):
                bind.execute(
                    sa.update(attachments).where(c.id == row.id).values(width=height, height=width)
                )
        rows = bind.execute(query.where(c.id > rows[-1].id)).all()
    if unread:
        logging.getLogger(__name__).warning(
            "%d image(s) not found or unreadable under %s: their sizes are as they were",
            unread,
            upload_dir,
        )


def downgrade() -> None:
    pass  # the sizes as shown are right for the code of 0002 as well
