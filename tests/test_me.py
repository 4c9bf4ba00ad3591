"""The signed-in user: tokens from the CLI, `me`, profile updates and system roles."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.conftest import Clients, Server, database_environment

ME = "{ me { id username displayName role preferences } }"


async def test_me_returns_the_user_behind_a_development_token(clients: Clients) -> None:
    alice = await clients.user("alice")
    me = (await alice.gql(ME))["me"]
    assert me["username"] == "alice"
    assert me["role"] == "MEMBER"
    assert me["preferences"] == {}


async def test_me_without_a_token_is_unauthenticated(clients: Clients) -> None:
    assert await clients.anonymous.error(ME) == "UNAUTHENTICATED"


async def test_a_bad_token_is_unauthenticated(clients: Clients) -> None:
    clients.anonymous.token = "not-a-jwt"
    assert await clients.anonymous.error(ME) == "UNAUTHENTICATED"


async def test_cli_token_signs_in_as_that_user(server: Server, clients: Clients) -> None:
    settings = server.runtime.settings
    env = {
        **os.environ,
        **database_environment(settings.database_url),
        "DEV_AUTH_SECRET": settings.dev_auth_secret.get_secret_value(),
    }
    env.pop("REDIS_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "threadline",
        "token",
        "carol",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    clients.anonymous.token = stdout.decode().strip().splitlines()[-1]
    me = (await clients.anonymous.gql(ME))["me"]
    assert me["username"] == "carol"


async def test_update_me_changes_display_name_and_preferences(clients: Clients) -> None:
    alice = await clients.user("alice")
    data = await alice.gql(
        'mutation { updateMe(input: {displayName: "  Alice A. ", preferences: {theme: "dark"}}) '
        "{ displayName preferences } }"
    )
    assert data["updateMe"] == {"displayName": "Alice A.", "preferences": {"theme": "dark"}}


async def test_preferences_are_hidden_from_other_users(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    await alice.gql("mutation { updateMe(input: {preferences: {secret: 1}}) { id } }")
    seen = await bob.gql("query($id: ID!) { user(id: $id) { preferences } }", {"id": alice.id})
    assert seen["user"]["preferences"] is None


async def test_users_search_finds_by_username_and_display_name(clients: Clients) -> None:
    alice = await clients.user("alice")
    await clients.user("bob")
    found = await alice.gql('{ users(search: "bo") { edges { node { username } } } }')
    assert [e["node"]["username"] for e in found["users"]["edges"]] == ["bob"]


async def test_users_search_ignores_case_beyond_ascii(clients: Clients) -> None:
    alice, emile = await clients.users("alice", "emile")
    await emile.gql('mutation { updateMe(input: {displayName: "Émile Zola"}) { id } }')
    for search in ("Émile", "émile", "ÉMILE"):
        found = await alice.gql(
            "query($s: String) { users(search: $s) { edges { node { id } } } }", {"s": search}
        )
        assert [e["node"]["id"] for e in found["users"]["edges"]] == [emile.id], search


async def test_users_with_the_same_display_name_page_once_each_in_order(
    clients: Clients,
) -> None:
    """Pages of users go by (displayName, id): people named alike come once each, in the
    order one long page gives, whatever the page size."""
    everyone = await clients.users("ann", "bea", "cid", "dot", "eve")
    for api in everyone:
        await api.gql(
            'mutation { updateMe(input: {displayName: "Sam Lee"}) { id } }',
        )
    page_of = 'query($n: Int, $c: String) { users(search: "sam", first: $n, after: $c) '
    page_of += "{ edges { cursor node { id } } pageInfo { hasNextPage } } }"
    whole = (await everyone[0].gql(page_of, {"n": 50}))["users"]["edges"]
    assert sorted(e["node"]["id"] for e in whole) == sorted(api.id for api in everyone)
    for size in (1, 2):
        seen: list[str] = []
        after = None
        while True:
            page = (await everyone[0].gql(page_of, {"n": size, "c": after}))["users"]
            seen += [e["node"]["id"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["edges"][-1]["cursor"]
        assert seen == [e["node"]["id"] for e in whole]
