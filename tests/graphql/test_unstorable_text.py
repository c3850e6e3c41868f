"""Text no database can store is refused wherever the schema takes text, in every role.

PostgreSQL cannot store NUL, and neither engine can store a lone UTF-16
surrogate (`"\\ud800"` is valid JSON, and Python decodes it). The places are
read from the live schema: every String, ID or DateTime argument of every
root field, and every such field of an input object however nested, so an
argument added later is covered without touching this file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import graphql
import pytest
from graphql import (
    GraphQLInputType,
    GraphQLSchema,
    get_named_type,
    get_nullable_type,
    is_enum_type,
    is_input_object_type,
    is_list_type,
    is_non_null_type,
    is_scalar_type,
)

from server.domain.enums import Role
from server.graphql.schema import export_sdl
from server.text import UNSTORABLE_TEXT
from tests.helpers import (
    ADMIN,
    ALICE,
    SERVICE,
    STORE,
    GraphQLClient,
    MovableClock,
    bearer,
    error_codes,
    store_input,
)

TEXT_SCALARS = frozenset({"String", "ID", "DateTime"})
BAD_TEXTS = {"high-surrogate": "\ud800", "low-surrogate": "ok\udfff", "nul": "a\x00b"}
ROLES = {"ADMIN": ADMIN, "USER": ALICE, "SERVICE": SERVICE}
# Values of the right type for the other parts of a request (the control must be valid).
SAMPLES = {"String": "x", "ID": "alice", "DateTime": "2026-11-28T10:00:00+00:00", "Int": 1}
# Stands in for the bad text in a literal, then is replaced by its GraphQL escape.
PLACEHOLDER = "ZzPlaceholderZz"

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Place:
    """One place a caller sends text: an argument of a root field, and a path below it."""

    operation: str  # query | mutation | subscription
    field: str
    argument: str
    path: Path

    def __str__(self) -> str:
        return f"{self.field}({self.argument}{_dotted(self.path)})"


def _dotted(path: Path) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)


def _text_paths(type_: GraphQLInputType, seen: tuple[str, ...] = ()) -> Iterator[Path]:
    nullable = get_nullable_type(type_)
    if is_list_type(nullable):
        yield from ((0, *path) for path in _text_paths(nullable.of_type, seen))
        return
    named = get_named_type(type_)
    if is_scalar_type(named) and named.name in TEXT_SCALARS:
        yield ()
    elif is_input_object_type(named) and named.name not in seen:
        for name, field in named.fields.items():
            yield from ((name, *path) for path in _text_paths(field.type, (*seen, named.name)))


def text_places(schema: GraphQLSchema) -> list[Place]:
    roots = (
        ("query", schema.query_type),
        ("mutation", schema.mutation_type),
        ("subscription", schema.subscription_type),
    )
    return [
        Place(operation, field_name, argument_name, path)
        for operation, root in roots
        if root is not None
        for field_name, field in root.fields.items()
        for argument_name, argument in field.args.items()
        for path in _text_paths(argument.type)
    ]


SCHEMA = graphql.build_schema(export_sdl())
PLACES = text_places(SCHEMA)


def _sample(type_: GraphQLInputType) -> Any:
    """A valid value of `type_`: required input fields filled, optional ones left out."""
    nullable = get_nullable_type(type_)
    if is_list_type(nullable):
        return [_sample(nullable.of_type)]
    named = get_named_type(type_)
    if is_enum_type(named):
        return next(iter(named.values))
    if is_input_object_type(named):
        return {
            name: _sample(field.type)
            for name, field in named.fields.items()
            if is_non_null_type(field.type) and field.default_value is graphql.Undefined
        }
    return SAMPLES.get(named.name, True)


def _with(value: Any, type_: GraphQLInputType, path: Path, text: str) -> Any:
    """`value` with `text` put at `path`, filling in what the path passes through."""
    if not path:
        return text
    step, *rest = path
    nullable = get_nullable_type(type_)
    if isinstance(step, int):
        assert is_list_type(nullable)
        items = list(value) if isinstance(value, list) and value else [None]
        items[step] = _with(items[step], nullable.of_type, tuple(rest), text)
        return items
    named = get_named_type(type_)
    assert is_input_object_type(named)
    fields = dict(value) if isinstance(value, dict) else _sample(named)
    fields[step] = _with(fields.get(step), named.fields[step].type, tuple(rest), text)
    return fields


@dataclass(frozen=True)
class Probe:
    document: str
    variables: dict[str, Any]


def _root_field(place: Place) -> graphql.GraphQLField:
    root = {
        "query": SCHEMA.query_type,
        "mutation": SCHEMA.mutation_type,
        "subscription": SCHEMA.subscription_type,
    }[place.operation]
    assert root is not None
    return root.fields[place.field]


def _selection(field: graphql.GraphQLField) -> str:
    return "" if is_scalar_type(get_named_type(field.type)) else " { __typename }"


def _argument_values(place: Place, text: str) -> dict[str, Any]:
    """The argument under test holding `text`, and every required argument besides."""
    field = _root_field(place)
    values = {
        name: _sample(argument.type)
        for name, argument in field.args.items()
        if is_non_null_type(argument.type) and argument.default_value is graphql.Undefined
    }
    argument_type = field.args[place.argument].type
    values[place.argument] = _with(values.get(place.argument), argument_type, place.path, text)
    return values


def variable_probe(place: Place, text: str) -> Probe:
    """The request with every argument sent as a variable of the argument's name."""
    field = _root_field(place)
    values = _argument_values(place, text)
    declarations = ", ".join(f"${name}: {field.args[name].type}" for name in values)
    arguments = ", ".join(f"{name}: ${name}" for name in values)
    document = (
        f"{place.operation} Probe({declarations}) "
        f"{{ {place.field}({arguments}){_selection(field)} }}"
    )
    return Probe(document, values)


def literal_probe(place: Place, escaped: str) -> Probe:
    """The request with every argument written in the document; `escaped` is GraphQL text."""
    field = _root_field(place)
    values = _argument_values(place, PLACEHOLDER)
    arguments = [
        f"{name}: {_literal(value, field.args[name].type)}" for name, value in values.items()
    ]
    document = f"{place.operation} {{ {place.field}({', '.join(arguments)}){_selection(field)} }}"
    return Probe(document.replace(PLACEHOLDER, escaped), {})


def _literal(value: Any, type_: GraphQLInputType) -> str:
    """`value` (JSON, as a variable would carry it) written as a GraphQL literal."""
    nullable = get_nullable_type(type_)
    named = get_named_type(type_)
    if is_list_type(nullable):
        return "[" + ", ".join(_literal(item, nullable.of_type) for item in value) + "]"
    if is_input_object_type(named):
        fields = (
            f"{name}: {_literal(item, named.fields[name].type)}" for name, item in value.items()
        )
        return "{" + ", ".join(fields) + "}"
    if is_enum_type(named):
        return str(value)
    return json.dumps(value)  # strings, numbers and booleans are written alike


async def _send(gql: GraphQLClient, probe: Probe, auth: str) -> tuple[int, str]:
    response = await gql.http.post(
        "/graphql",
        data=json.dumps({"query": probe.document, "variables": probe.variables}),
        headers={"Authorization": auth, "Content-Type": "application/json"},
    )
    return response.status, await response.text()


def test_the_schema_takes_text_where_the_attacks_put_it() -> None:
    """The walk finds the arguments that answered INTERNAL, nested input fields included
    (so the tests below cannot pass by finding nothing)."""
    found = {str(place) for place in PLACES}
    assert {
        "startGithubConnect(redirectUri)",
        "completeGithubConnect(state)",
        "completeGithubConnect(code)",
        "checkoutGithubToken(userId)",
        "storeGithubToken(input.email)",
        "storeGithubToken(input.accessTokenExpiresAt)",
        "purgeUser(userId)",
        "auditEvents(userId)",
        "auditEvents(after)",
        "githubTokens(filter.githubLogin)",
        "user(id)",
        "githubTokenChanged(userId)",
    } <= found


async def test_unstorable_text_in_any_variable_is_a_client_error_naming_it(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure a lone surrogate or a NUL in any text variable, in every role, is a 400
    naming the variable and the place in it, never INTERNAL; and that the same request
    with ordinary text gets past that check, so the refusal is the text's doing."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    audit_before = await gql.data("{ auditEvents(first: 100) { edges { cursor } } }", auth=ADMIN)
    for place in PLACES:
        expected = (
            f"GraphQL requests must not contain {UNSTORABLE_TEXT} "
            f"(found at variables.{place.argument}{_dotted(place.path)})"
        )
        for role, auth in ROLES.items():
            for name, text in BAD_TEXTS.items():
                status, body = await _send(gql, variable_probe(place, text), auth)
                refusal = {"errors": [{"message": expected}]}
                assert (status, json.loads(body)) == (400, refusal), (str(place), role, name)
            status, body = await _send(gql, variable_probe(place, "x"), auth)
            assert status < 500, (str(place), role, body)
            assert UNSTORABLE_TEXT not in body, (str(place), role, body)

    # Nothing ran: no mutation wrote, alice's token is as it was.
    audit_after = await gql.data("{ auditEvents(first: 100) { edges { cursor } } }", auth=ADMIN)
    assert audit_after == audit_before
    viewer = await gql.data("{ viewer { githubToken { state } } }", auth=ALICE)
    assert viewer["viewer"]["githubToken"]["state"] == "ACTIVE"


async def test_unstorable_text_in_any_literal_is_an_error_naming_it(gql: GraphQLClient) -> None:
    """Make sure `\\u0000` in any string literal is INVALID_INPUT naming the argument, and a
    surrogate escape a syntax error, in every role; never INTERNAL."""
    for place in PLACES:
        where = place.argument + "".join(f".{step}" for step in place.path if isinstance(step, str))
        for role, auth in ROLES.items():
            status, text = await _send(gql, literal_probe(place, "a\\u0000b"), auth)
            body = json.loads(text)
            if place.operation == "subscription":
                # Refused as a POST before validation: subscriptions go over websockets.
                assert status == 400, (str(place), role, text)
                assert "graphql-transport-ws" in body["errors"][0]["message"]
                continue
            assert status == 200, (str(place), role, text)
            refusals = [
                error
                for error in body["errors"]
                if error.get("extensions", {}).get("code") == "INVALID_INPUT"
            ]
            assert [error["extensions"]["field"] for error in refusals] == [where], (
                str(place),
                role,
                body,
            )
            assert "INTERNAL" not in error_codes(body)

            status, text = await _send(gql, literal_probe(place, "\\ud800"), auth)
            body = json.loads(text)
            assert status == 200, (str(place), role, text)
            assert [error["message"] for error in body["errors"]] == [
                "Syntax Error: Invalid Unicode escape sequence: '\\ud800'."
            ], (str(place), role)


@pytest.mark.parametrize("claim", ["email", "name"])
async def test_a_jwt_with_unstorable_profile_text_is_refused(
    gql: GraphQLClient, claim: str
) -> None:
    """A signed token whose email or name no database can store is refused like a bad sub
    (401), rather than reaching the users table."""
    claims: dict[str, Any] = {claim: "Erin \ud800"}
    auth = bearer("erin", Role.USER, **claims)

    body = await gql.post("{ viewer { githubToken { state } } }", auth=auth)

    assert error_codes(body) == ["UNAUTHENTICATED"]
