"""GraphQL input types of the contract."""

from __future__ import annotations

import strawberry
from strawberry import ID
from strawberry.scalars import JSON


@strawberry.input(name="CreateThreadInput")
class CreateThreadInput:
    title: str
    description: str | None = None
    participant_ids: list[ID] | None = strawberry.field(
        default_factory=list, description="Users to add as MEMBERs; the caller becomes OWNER."
    )


@strawberry.input(name="UpdateThreadInput")
class UpdateThreadInput:
    title: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET


@strawberry.input(name="SendMessageInput")
class SendMessageInput:
    thread_id: ID
    body: str
    parent_id: ID | None = strawberry.field(
        default=None, description="Reply to this message (same thread)."
    )
    client_id: str | None = strawberry.field(
        default=None,
        description="Idempotency key: resending with the same key returns the first message.",
    )
    attachment_ids: list[ID] | None = strawberry.field(
        default_factory=list,
        description="Attachments uploaded earlier by the caller to this thread, not yet used.",
    )


@strawberry.input(name="UpdateMeInput")
class UpdateMeInput:
    display_name: str | None = strawberry.UNSET
    preferences: JSON | None = strawberry.UNSET
