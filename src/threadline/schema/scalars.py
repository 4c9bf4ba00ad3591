"""Custom scalars: DateTime as ISO-8601 UTC with milliseconds and a Z, JSON, Upload."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry

from threadline.errors import BadInput


def serialize_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise BadInput("DateTime must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"Invalid DateTime: {value!r}") from None
    if parsed.tzinfo is None:
        raise BadInput("DateTime must carry a time zone (use Z for UTC)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, or year 9999 west of it
        raise BadInput(f"DateTime out of range: {value!r}") from None


DateTime = strawberry.scalar(
    name="DateTime",
    description="An ISO-8601 date and time, always in UTC, e.g. 2026-11-24T10:15:30.123Z.",
    serialize=serialize_datetime,
    parse_value=parse_datetime,
)
