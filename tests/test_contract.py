"""The server's schema against the API contract (schema.graphql): no database needed.

The contract is the shared copy (``../shared/api/schema.graphql`` beside the repo)
when there is one, else the repo's own ``schema.graphql``; when both exist they must
be the same file. Breaking and dangerous changes are found by graphql-core; the
permission directives, which graphql-core's schema objects do not carry on fields,
are compared in the printed SDL.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from graphql import (
    DirectiveDefinitionNode,
    DirectiveNode,
    DocumentNode,
    GraphQLSchema,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
    parse,
    print_ast,
)
from graphql.language import (
    InterfaceTypeDefinitionNode,
    InterfaceTypeExtensionNode,
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
)

from threadline.graphql_app import ROOTS
from threadline.schema import schema as server_schema_module
from threadline.schema.engine.internals import graphql_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CONTRACT = REPO_ROOT.parent / "shared" / "api" / "schema.graphql"
REPO_CONTRACT = REPO_ROOT / "schema.graphql"
PERMISSION_DIRECTIVES = ("authenticated", "hasRole", "threadRole")

# (type, field) -> the field's directives, each printed as in SDL: "@hasRole(role: ADMIN)".
FieldDirectives = dict[tuple[str, str], list[str]]


def contract_path() -> Path:
    if SHARED_CONTRACT.exists():
        return SHARED_CONTRACT
    return REPO_CONTRACT


@cache
def contract_sdl() -> str:
    return contract_path().read_text(encoding="utf-8")


@cache
def printed_server_sdl() -> str:
    return str(server_schema_module.build_schema(ROOTS))


def server_schema() -> GraphQLSchema:
    return graphql_schema(server_schema_module.build_schema(ROOTS))


def field_directives(document: DocumentNode) -> FieldDirectives:
    found: FieldDirectives = {}
    kinds = (
        ObjectTypeDefinitionNode,
        ObjectTypeExtensionNode,
        InterfaceTypeDefinitionNode,
        InterfaceTypeExtensionNode,
    )
    for definition in document.definitions:
        if not isinstance(definition, kinds):
            continue
        for field in definition.fields or ():
            key = (definition.name.value, field.name.value)
            found.setdefault(key, []).extend(_printed(d) for d in field.directives or ())
    return found


def _printed(directive: DirectiveNode) -> str:
    return print_ast(directive)


def directive_definitions(document: DocumentNode) -> dict[str, DirectiveDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, DirectiveDefinitionNode)}


def _shape(definition: DirectiveDefinitionNode) -> dict[str, object]:
    """What a directive definition promises, without its description."""
    return {
        "arguments": [
            (
                argument.name.value,
                print_ast(argument.type),
                print_ast(argument.default_value) if argument.default_value else None,
            )
            for argument in definition.arguments or ()
        ],
        "locations": sorted(location.value for location in definition.locations),
        "repeatable": definition.repeatable,
    }


# ---------------------------------------------------------------- the contract file


def test_the_shared_contract_and_the_repos_copy_are_the_same_when_both_exist() -> None:
    if not (SHARED_CONTRACT.exists() and REPO_CONTRACT.exists()):
        pytest.skip("only one copy of the contract is present")
    assert SHARED_CONTRACT.read_text(encoding="utf-8") == REPO_CONTRACT.read_text(
        encoding="utf-8"
    ), f"{REPO_CONTRACT} differs from {SHARED_CONTRACT}: copy the shared contract over"


def test_the_contract_is_a_valid_schema_with_permission_directives() -> None:
    contract = build_schema(contract_sdl())
    assert contract.query_type is not None
    assert contract.mutation_type is not None
    assert contract.subscription_type is not None
    directed = field_directives(parse(contract_sdl()))
    assert any(d for d in directed.values()), "the contract carries no permission directive"


# ---------------------------------------------------------------- types


def test_the_server_schema_has_no_breaking_change_against_the_contract() -> None:
    changes = find_breaking_changes(build_schema(contract_sdl()), server_schema())
    assert [f"{c.type.name}: {c.description}" for c in changes] == []


def test_the_server_schema_has_no_dangerous_change_against_the_contract() -> None:
    changes = find_dangerous_changes(build_schema(contract_sdl()), server_schema())
    assert [f"{c.type.name}: {c.description}" for c in changes] == []


def test_the_printed_server_schema_parses_and_builds() -> None:
    printed = build_schema(printed_server_sdl())
    changes = find_breaking_changes(build_schema(contract_sdl()), printed)
    assert [f"{c.type.name}: {c.description}" for c in changes] == []


# ---------------------------------------------------------------- permission directives


def test_each_directive_on_a_contract_field_is_on_the_servers_field_as_written() -> None:
    contract = field_directives(parse(contract_sdl()))
    server = field_directives(parse(printed_server_sdl()))
    differences = {
        ".".join(key): {"contract": wanted, "server": server.get(key)}
        for key, wanted in contract.items()
        if wanted and sorted(server.get(key) or []) != sorted(wanted)
    }
    assert differences == {}


def test_the_server_adds_no_permission_directive_to_a_contract_field_without_one() -> None:
    contract = field_directives(parse(contract_sdl()))
    server = field_directives(parse(printed_server_sdl()))
    extra = {
        ".".join(key): added
        for key, wanted in contract.items()
        if not wanted and (added := [d for d in server.get(key) or [] if _is_permission(d)])
    }
    assert extra == {}


def _is_permission(printed: str) -> bool:
    return printed.lstrip("@").split("(")[0] in PERMISSION_DIRECTIVES


@pytest.mark.parametrize("name", PERMISSION_DIRECTIVES)
def test_the_printed_schema_defines_each_directive_as_the_contract_does(name: str) -> None:
    contract = directive_definitions(parse(contract_sdl()))
    server = directive_definitions(parse(printed_server_sdl()))
    assert name in contract, f"the contract does not define @{name}"
    assert name in server, f"the printed schema does not define @{name}"
    assert _shape(server[name]) == _shape(contract[name])
