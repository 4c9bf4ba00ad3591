"""Subscription stream: presence (implemented by the real-time issue)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from strawberry import Info

from threadline.errors import NotAvailableYet


async def stream(info: Info, *args: Any) -> AsyncIterator[Any]:
    raise NotAvailableYet("This subscription is not available yet")
    yield  # pragma: no cover
