"""Strict-Transport-Security on answers to HTTPS requests (browsers ignore it on plain HTTP,
RFC 6797 8.1), opt-in with HSTS_SECONDS: a browser that has seen it refuses plain HTTP to
the host for that long. Behind a proxy the scheme is its X-Forwarded-Proto (proxy_headers).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StrictTransport:
    def __init__(self, app: ASGIApp, seconds: int) -> None:
        self.app = app
        self.header = (b"strict-transport-security", f"max-age={seconds}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)
