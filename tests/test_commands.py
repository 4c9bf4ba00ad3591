"""The commands operators run: seed (twice), migrate, token, users set-role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Api,
    database_settings,
    own_database,
    token_for,
)
from tests.deployment import threadline
from threadline.cli import build_parser
from threadline.config import Settings
from threadline.migrate import current_revision_async, head_revision


async def test_seeding_twice_adds_no_duplicate_demo_data(
    settings: Settings, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    for _ in range(2):
        done = threadline("seed", database_url=settings.database_url, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
    alice = Api(http, token_for("alice"), "alice")
    data = await alice.gql(
        "{ threads(first: 50) { edges { node { title isDirect"
        " messages(first: 50) { edges { node { body } } } } } } }"
    )
    threads = {
        ("direct" if e["node"]["isDirect"] else e["node"]["title"]): [
            m["node"]["body"] for m in e["node"]["messages"]["edges"]
        ]
        for e in data["threads"]["edges"]
    }
    assert len(data["threads"]["edges"]) == 2
    assert len(threads["General"]) == 3 and threads["direct"] == ["Lunch at noon?", "Sure."]
    users = await alice.gql('{ users(search: "", first: 50) { edges { node { username } } } }')
    names = sorted(e["node"]["username"] for e in users["users"]["edges"])
    assert names == ["alice", "bob", "carol"]


@pytest.fixture
async def fresh_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database nothing has touched (on SQLite, not even its folder: migrate makes it)."""
    async with own_database(tmp_path, "fresh", folder=False) as url:
        yield url


async def test_migrate_brings_a_fresh_database_to_the_newest_revision_and_can_run_again(
    fresh_database_url: str, tmp_path: Path
) -> None:
    for _ in range(2):
        # Behind PgBouncer: DATABASE_URL is the pooler's, the migration goes to the direct URL.
        url = database_settings(fresh_database_url)["database_url"]
        done = threadline("migrate", database_url=url, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "newest revision" in done.stdout
    assert await current_revision_async(fresh_database_url) == head_revision()


async def test_users_set_role_makes_an_owner_and_refuses_unknown_users_and_roles(
    settings: Settings, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    url = settings.database_url
    made = threadline("token", "alice", database_url=url, tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
    done = threadline("users", "set-role", "alice", "owner", database_url=url, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "alice is now OWNER" in done.stdout
    me = await Api(http, made.stdout.strip(), "alice").gql("{ me { role } }")
    assert me["me"]["role"] == "OWNER"

    nobody = threadline("users", "set-role", "nobody", "admin", database_url=url, tmp_path=tmp_path)
    assert nobody.returncode == 1 and "Traceback" not in nobody.stderr
    assert nobody.stderr.startswith("threadline: ")
    bad_role = threadline("users", "set-role", "alice", "king", database_url=url, tmp_path=tmp_path)
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
    # CONTRACT.md: the last OWNER cannot be demoted, from the shell either.
    last = threadline("users", "set-role", "alice", "member", database_url=url, tmp_path=tmp_path)
    assert last.returncode == 1 and "Traceback" not in last.stderr
    assert last.stderr == "threadline: The last system OWNER cannot step down\n"
    me = await Api(http, made.stdout.strip(), "alice").gql("{ me { role } }")
    assert me["me"]["role"] == "OWNER"


def test_a_bad_username_for_a_token_is_a_message_not_a_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    done = threadline("token", "no spaces", database_url=settings.database_url, tmp_path=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "username" in done.stderr


@pytest.mark.parametrize(
    "argument",
    [["--port", "99999"], ["--port", "0"], ["--workers", "0"], ["--log-level", "loud"]],
)
def test_serve_refuses_an_argument_it_cannot_use(
    argument: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Rule: bad input gets a clear error. Evidence: `threadline serve --port 99999` served
    on port 34463 (99999 modulo 65536) while logging "Uvicorn running on
    http://127.0.0.1:99999"; `--log-level loud` died with uvicorn's KeyError traceback;
    `--workers 0` ran one process as if nothing were wrong."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", *argument])
    assert exited.value.code == 2
    assert f"argument {argument[0]}" in capsys.readouterr().err


def test_a_setting_found_wrong_as_serve_builds_the_app_is_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    """Rule (README: errors are one line and a non-zero exit; config errors exit 2).
    Evidence: `CLERK_JWT_KEY=garbage threadline serve` printed a 30-line traceback ending
    in "ConfigError: CLERK_JWT_KEY is not a PEM public key" and exited 1 (the key is read
    as the app is built, after the command's own check of the settings)."""
    done = threadline(
        "serve", database_url=settings.database_url, tmp_path=tmp_path, CLERK_JWT_KEY="garbage"
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "threadline: CLERK_JWT_KEY is not a PEM public key"


def test_an_upload_folder_that_cannot_be_made_stops_serve_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    """Rule: bad configuration gets a clear error. Evidence: with UPLOAD_DIR below a regular
    file, `threadline serve` started, /readyz said ok, and every upload was an
    INTERNAL_SERVER_ERROR (NotADirectoryError)."""
    (tmp_path / "a-file").write_text("")
    done = threadline(
        "serve",
        database_url=settings.database_url,
        tmp_path=tmp_path,
        UPLOAD_DIR=str(tmp_path / "a-file" / "uploads"),
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("threadline: UPLOAD_DIR ") and "Not a directory" in last
