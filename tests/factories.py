"""One-line builders for the common setup of tests, through the public API."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api

CREATE_THREAD = """
mutation($i: CreateThreadInput!) { createThread(input: $i) { id title lastSeq myRole } }
"""
SEND = """
mutation($i: SendMessageInput!) { sendMessage(input: $i) { id seq body clientId } }
"""


async def thread(owner: Api, *members: Api, title: str = "Room") -> str:
    data = await owner.gql(
        CREATE_THREAD, {"i": {"title": title, "participantIds": [m.id for m in members]}}
    )
    return str(data["createThread"]["id"])


async def send(api: Api, thread_id: str, body: str = "hello", **extra: Any) -> dict[str, Any]:
    data = await api.gql(SEND, {"i": {"threadId": thread_id, "body": body, **extra}})
    result: dict[str, Any] = data["sendMessage"]
    return result
