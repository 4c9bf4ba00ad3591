"""Gives each operation its own context and closes its database session at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension

from threadline.schema.context import Context


class OperationScope(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        shared = self.execution_context.context
        own = shared.fork() if isinstance(shared, Context) else None
        if own is not None:
            self.execution_context.context = own
        try:
            yield
        finally:
            if own is not None:
                await own.close()
