"""A GraphQL client library no one here wrote (Python's gql, with its file-upload
support over httpx) uploads an image, sends it in a message, and the same bytes
come back through Attachment.url."""

from __future__ import annotations

import io

import httpx
from gql import Client, FileVar, gql
from gql.transport.httpx import HTTPXAsyncTransport

from tests.conftest import Server, token_for
from tests.uploads import image

CREATE_THREAD = gql('mutation { createThread(input: {title: "Photos"}) { id } }')
UPLOAD = gql(
    """
    mutation($t: ID!, $file: Upload!) {
      uploadAttachment(threadId: $t, file: $file) { id contentType width height }
    }
    """
)
SEND = gql(
    """
    mutation($i: SendMessageInput!) {
      sendMessage(input: $i) { id attachments { id filename contentType url } }
    }
    """
)


async def test_gql_uploads_an_image_that_a_message_carries_and_its_url_serves(
    server: Server,
) -> None:
    png = image("PNG", (32, 24))
    transport = HTTPXAsyncTransport(
        url=f"{server.base}/graphql",
        headers={
            "authorization": f"Bearer {token_for('alice')}",
            # What apollo-upload-client users add; gql sends no CSRF header of its own.
            "apollo-require-preflight": "true",
        },
        timeout=30,
    )
    async with Client(transport=transport) as session:
        thread = await session.execute(CREATE_THREAD)
        tid = thread["createThread"]["id"]
        UPLOAD.variable_values = {
            "t": tid,
            "file": FileVar(io.BytesIO(png), filename="holiday.png", content_type="image/png"),
        }
        uploaded = (await session.execute(UPLOAD, upload_files=True))["uploadAttachment"]
        assert (uploaded["contentType"], uploaded["width"], uploaded["height"]) == (
            "image/png",
            32,
            24,
        )
        SEND.variable_values = {
            "i": {"threadId": tid, "body": "from the beach", "attachmentIds": [uploaded["id"]]}
        }
        sent = (await session.execute(SEND))["sendMessage"]
    [attachment] = sent["attachments"]
    assert attachment["id"] == uploaded["id"]
    assert attachment["filename"] == "holiday.png"
    async with httpx.AsyncClient() as browser:
        response = await browser.get(attachment["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == png
