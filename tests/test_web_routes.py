"""The web client's server side: the page at /, its static files, its sign-in configuration,
and the development-only token endpoint (absent in production and Clerk mode)."""

from __future__ import annotations

import base64
import glob
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from tests.conftest import Api, Server, start_server, stop_server
from threadline.config import Environment, Settings
from threadline.web_routes import WEB_DIR, clerk_frontend_api

ROOT = Path(__file__).resolve().parent.parent
FRONTEND_API = "clerk.example.com"
PUBLISHABLE_KEY = "pk_test_" + base64.b64encode(f"{FRONTEND_API}$".encode()).decode().rstrip("=")
JS_BUDGET_BYTES = 60_000
JSON = {"content-type": "application/json"}


def public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
async def production(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    prod = settings.model_copy(
        update={
            "threadline_env": Environment.PRODUCTION,
            "clerk_jwt_key": SecretStr(public_pem()),
            "dev_auth_secret": None,
            "clerk_publishable_key": PUBLISHABLE_KEY,
        }
    )
    running: Server = await start_server(prod)
    async with httpx.AsyncClient(base_url=running.base, timeout=30) as client:
        yield client
    await stop_server(running)


def inline_config(page: str) -> str:
    match = re.search(r'<script type="application/json" id="config">(.*?)</script>', page)
    assert match, "the page carries its configuration inline"
    return match.group(1)


async def test_the_page_and_its_modules_are_served_from_our_own_origin(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert inline_config(page.text) == '{"auth": "development"}'
    # Every module the page imports, directly or not, is served here.
    for path in sorted((WEB_DIR / "js").glob("*.js")):
        module = await http.get(f"/web/js/{path.name}")
        assert module.status_code == 200, path.name
        assert "javascript" in module.headers["content-type"]
        assert "https://" not in module.text or path.name == "auth.js", path.name
    assert (await http.get("/web/style.css")).status_code == 200
    assert (await http.get("/favicon.ico")).status_code == 200
    # The page's file is the page too, not its template without the page's headers.
    template = await http.get("/web/index.html")
    assert template.text == page.text
    assert template.headers["content-security-policy"] == csp and "frame-ancestors" in csp


def test_the_pages_javascript_totals_under_60_kb_unminified() -> None:
    sizes = {p.name: p.stat().st_size for p in (WEB_DIR / "js").glob("*.js")}
    total = sum(sizes.values())
    print(f"web client JavaScript: {total} bytes in {len(sizes)} modules {sizes}")
    assert total < JS_BUDGET_BYTES


def test_every_web_file_is_package_data() -> None:
    """pyproject's package-data globs (as setuptools expands them) cover every file of web/."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["threadline"]
    package = ROOT / "src" / "threadline"
    covered = {
        Path(match).resolve()
        for pattern in patterns
        for match in glob.glob(str(package / pattern), recursive=True)
    }
    files = {p.resolve() for p in WEB_DIR.rglob("*") if p.is_file()}
    assert files and files <= covered, sorted(str(p) for p in files - covered)


async def test_a_development_token_signs_a_new_user_in(http: httpx.AsyncClient) -> None:
    response = await http.post("/dev/token", json={"username": "dora"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    me = await Api(http, response.json()["token"]).gql("{ me { username displayName } }")
    assert me["me"] == {"username": "dora", "displayName": "dora"}
    # The same user again, not a second one.
    again = await http.post("/dev/token", json={"username": "dora"})
    ids = [
        (await Api(http, r.json()["token"]).gql("{ me { id } }"))["me"]["id"]
        for r in (response, again)
    ]
    assert ids[0] == ids[1]


@pytest.mark.parametrize(
    "body",
    [b'{"username": "no spaces"}', b'{"username": ""}', b"not json", b"[1]", b'{"username": 7}'],
)
async def test_a_bad_development_sign_in_is_bad_user_input(
    http: httpx.AsyncClient, body: bytes
) -> None:
    response = await http.post("/dev/token", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
async def test_another_sites_page_cannot_make_development_users(
    http: httpx.AsyncClient, content_type: str | None
) -> None:
    """A cross-site page may POST a form or a plain-text fetch without asking first (a
    CORS simple request): it cannot read the token, but it made a user each time."""
    body = b'{"username": "made_by_another_site"}'
    headers = {"content-type": content_type} if content_type else {}
    response = await http.post("/dev/token", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "BAD_USER_INPUT"
    viewer = (await http.post("/dev/token", json={"username": "viewer"})).json()["token"]
    found = await Api(http, viewer).gql('{ users(search: "made_by") { edges { node { id } } } }')
    assert found["users"]["edges"] == []


async def test_a_huge_development_sign_in_is_refused_before_it_is_parsed(
    http: httpx.AsyncClient,
) -> None:
    body = b'{"username": "' + b"a" * 5000 + b'"}'
    response = await http.post("/dev/token", content=body, headers=JSON)
    assert response.status_code == 413


async def test_production_has_no_development_token_endpoint_and_signs_in_with_clerk(
    production: httpx.AsyncClient,
) -> None:
    assert (await production.post("/dev/token", json={"username": "eve"})).status_code == 404
    page = await production.get("/")
    assert page.status_code == 200
    assert inline_config(page.text) == (
        f'{{"auth": "clerk", "publishableKey": "{PUBLISHABLE_KEY}", '
        f'"clerkFrontendApi": "{FRONTEND_API}"}}'
    )
    # Clerk's own script is the only off-server one the policy allows.
    assert f"script-src 'self' https://{FRONTEND_API} " in page.headers["content-security-policy"]


async def test_clerk_mode_without_a_publishable_key_says_so(settings: Settings) -> None:
    clerk = settings.model_copy(
        update={"clerk_jwt_key": SecretStr(public_pem()), "dev_auth_secret": None}
    )
    running = await start_server(clerk)
    try:
        async with httpx.AsyncClient(base_url=running.base) as client:
            assert inline_config((await client.get("/")).text) == '{"auth": "unconfigured"}'
            assert (await client.post("/dev/token", json={"username": "x"})).status_code == 404
    finally:
        await stop_server(running)


@pytest.mark.parametrize(
    ("key", "host"),
    [
        (PUBLISHABLE_KEY, FRONTEND_API),
        ("pk_live_" + base64.b64encode(b"clerk.app.io$").decode(), "clerk.app.io"),
        ("sk_test_" + base64.b64encode(b"clerk.app.io$").decode(), None),
        ("pk_test_" + base64.b64encode(b"clerk.app.io").decode(), None),
        ("pk_test_" + base64.b64encode(b"evil.io/x<script>$").decode(), None),
        ("pk_test_%%%", None),
        ("pk_test", None),
    ],
)
def test_the_clerk_frontend_api_is_read_from_the_publishable_key(
    key: str, host: str | None
) -> None:
    assert clerk_frontend_api(key) == host
