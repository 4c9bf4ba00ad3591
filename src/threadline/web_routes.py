"""The browser client's routes: the static page at ``/`` (``web/``, no build step), its
files and configuration, and (development only) the endpoint that signs a picked user in.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from functools import partial
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from threadline.auth.tokens import DEV_TOKEN_SECONDS, mint_dev_token
from threadline.config import Settings
from threadline.errors import BadInput
from threadline.runtime import Runtime
from threadline.services.users import ensure_dev_user

WEB_DIR = Path(__file__).parent / "web"
# A username is at most 64 characters; anything much larger is not a picker's request.
MAX_DEV_TOKEN_BODY = 1024


def clerk_frontend_api(publishable_key: str) -> str | None:
    """The Clerk frontend API host that a publishable key encodes (``pk_<env>_<b64 host$>``)."""
    parts = publishable_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "pk":
        return None
    encoded = parts[2]
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    host = decoded.rstrip("$")
    if not decoded.endswith("$") or not host or not all(c.isalnum() or c in ".-" for c in host):
        return None
    return host


def page_config(settings: Settings, dev_secret: str | None) -> dict[str, object]:
    """What the page needs to sign in: development tokens, or Clerk's publishable key."""
    if dev_secret is not None:
        return {"auth": "development"}
    key = settings.clerk_publishable_key
    frontend = clerk_frontend_api(key) if key else None
    if key is None or frontend is None:
        # The page says so instead of failing silently.
        return {"auth": "unconfigured"}
    return {"auth": "clerk", "publishableKey": key, "clerkFrontendApi": frontend}


def content_security_policy(config: dict[str, object]) -> str:
    """Only our own origin, plus Clerk's frontend API (and what Clerk.js needs) in Clerk mode."""
    script = connect = img = frame = "'self'"
    if config["auth"] == "clerk":
        clerk = f"https://{config['clerkFrontendApi']}"
        challenges = "https://challenges.cloudflare.com"
        script += f" {clerk} {challenges}"
        connect += f" {clerk}"
        img += " https://img.clerk.com"
        frame += f" {challenges}"
    return (
        f"default-src 'self'; script-src {script}; connect-src {connect}; "
        f"img-src {img} data: blob:; style-src 'self' 'unsafe-inline'; "
        f"frame-src {frame}; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        # No site may frame the page and overlay its buttons (clickjacking).
        "frame-ancestors 'none'"
    )


def web_routes(settings: Settings) -> list[BaseRoute]:
    dev_secret = settings.resolve_dev_secret()
    config = page_config(settings, dev_secret)
    page = (WEB_DIR / "index.html").read_text()
    # Inline configuration: the page needs no extra round trip before it can sign in.
    page = page.replace("{{CONFIG}}", json.dumps(config).replace("<", "\\u003c"))
    headers = {
        "content-security-policy": content_security_policy(config),
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",  # frame-ancestors, for browsers without CSP 2
        # An opener keeps no handle on the page; its pop-ups (Clerk's sign-in) keep theirs.
        "cross-origin-opener-policy": "same-origin-allow-popups",
        "referrer-policy": "same-origin",
        "cache-control": "no-cache",
    }

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)

    async def favicon(request: Request) -> Response:
        return FileResponse(WEB_DIR / "icon.svg", media_type="image/svg+xml")

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
        # The page's template is not a static file: the page, with its headers.
        Route("/web/index.html", index, methods=["GET", "HEAD"]),
        Mount("/web", StaticFiles(directory=WEB_DIR), name="web"),
    ]
    if dev_secret is not None:
        # Present only while development tokens are on: never in production or Clerk mode.
        routes.append(Route("/dev/token", partial(_dev_token, secret=dev_secret), methods=["POST"]))
    return routes


async def _dev_token(request: Request, secret: str) -> Response:
    """A development token for ``{"username": ...}``; the user is created on first use."""
    runtime: Runtime = request.app.state.runtime
    # Another site's page cannot send JSON without a preflight: it cannot make users.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _refuse(415, "BAD_USER_INPUT", "send content-type: application/json")
    body = await request.body()
    if len(body) > MAX_DEV_TOKEN_BODY:
        return _refuse(413, "PAYLOAD_TOO_LARGE", "the request body is too large")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    username = payload.get("username") if isinstance(payload, dict) else None
    if not isinstance(username, str):
        return _refuse(400, "BAD_USER_INPUT", 'send JSON: {"username": "alice"}')
    try:
        async with runtime.db.transaction("web_dev_token") as uow:
            user = await ensure_dev_user(uow, username)
    except BadInput as error:
        return _refuse(400, "BAD_USER_INPUT", error.message)
    token = mint_dev_token(secret, user.clerk_id, user.username or username)
    return JSONResponse(
        {"token": token, "expiresAt": int(time.time()) + DEV_TOKEN_SECONDS},
        headers={"cache-control": "no-store"},
    )


def _refuse(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
