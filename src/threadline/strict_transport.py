"""Strict-Transport-Security on answers to HTTPS requests, when HSTS_SECONDS is set.

Opt-in, as in Django: a browser that has seen the header refuses plain HTTP to the host
for that long, so it is for whoever runs TLS to turn on. Answers to plain-HTTP requests
never carry it (browsers ignore it there, RFC 6797 section 8.1). Behind a proxy, the
scheme is the proxy's X-Forwarded-Proto (uvicorn's proxy_headers, from trusted addresses).
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
