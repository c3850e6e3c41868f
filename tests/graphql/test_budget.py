"""The document budget: cheap counts refuse costly documents before graphql-core validates them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from graphql import get_introspection_query, parse
from strawberry.schema import schema as strawberry_schema

from server.config import GraphQLLimits
from server.graphql import schema as schema_module
from server.graphql.budget import MAX_NESTING, DocumentBudget
from tests.helpers import ADMIN, PURGE, REVOKE, STORE, VIEWER_TOKEN, GraphQLClient

LIMITS = GraphQLLimits()


def refusal(document: str, limits: GraphQLLimits = LIMITS) -> str | None:
    error = DocumentBudget(limits).check(parse(document))
    return None if error is None else error.message


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every document that reached graphql-core's validation rules."""
    seen: list[Any] = []
    validate_document = strawberry_schema.validate_document  # what schema.py calls

    def counting(schema: Any, document: Any, rules: Any) -> Any:
        seen.append(document)
        return validate_document(schema, document, rules)

    monkeypatch.setattr(schema_module, "validate_document", counting)
    return seen


@pytest.mark.parametrize(
    "document",
    [
        STORE,
        REVOKE,
        PURGE,
        VIEWER_TOKEN,
        get_introspection_query(descriptions=True),
        get_introspection_query(
            descriptions=True,
            specified_by_url=True,
            directive_is_repeatable=True,
            schema_description=True,
            input_value_deprecation=True,
            one_of=True,
        ),
    ],
    ids=["store", "revoke", "purge", "viewer", "introspection", "graphiql-introspection"],
)
def test_the_documents_clients_send_are_within_the_budget(document: str) -> None:
    """Make sure the budget leaves room for the API's own documents and GraphiQL's schema load."""
    assert refusal(document) is None


def test_a_field_repeated_past_the_limit_is_refused_with_the_limit_named() -> None:
    within = "{ viewer { " + "id " * LIMITS.max_field_repeats + "} }"
    over = "{ viewer { " + "id " * (LIMITS.max_field_repeats + 1) + "} }"
    assert refusal(within) is None
    message = refusal(over)
    assert message is not None
    assert f"'id' is selected {LIMITS.max_field_repeats + 1} times" in message
    assert f"limit is {LIMITS.max_field_repeats}" in message


def test_repeats_are_counted_through_fragments_and_aliases() -> None:
    """A response name is what graphql-core compares, wherever its fields come from."""
    over = LIMITS.max_field_repeats + 1
    through_fragments = (
        "{ viewer { ...A ... on Viewer { x: role } } } "
        "fragment A on Viewer { " + "x: id " * (over - 1) + "}"
    )
    message = refusal(through_fragments)
    assert message is not None
    assert f"'x' is selected {over} times" in message


def test_selections_past_the_limit_are_refused() -> None:
    names = [f"a{i}: id" for i in range(LIMITS.max_selections)]
    assert refusal("{ viewer { " + " ".join(names[: LIMITS.max_selections - 1]) + " } }") is None
    message = refusal("{ viewer { " + " ".join(names) + " } }")
    assert message is not None
    assert f"more than {LIMITS.max_selections} selections" in message


def test_fragments_that_multiply_are_refused() -> None:
    """Fragments spreading the next one twice double per level: small text, huge expansion."""
    chain = 12
    linear = (
        "{ viewer { ...C0 } } "
        + " ".join(f"fragment C{i} on Viewer {{ a{i}: id ...C{i + 1} }}" for i in range(chain))
        + f" fragment C{chain} on Viewer {{ id }}"
    )
    doubling = (
        "{ viewer { ...C0 } } "
        + " ".join(
            f"fragment C{i} on Viewer {{ a{i}: id ...C{i + 1} ...D{i + 1} }}" for i in range(chain)
        )
        + " "
        + " ".join(f"fragment D{i} on Viewer {{ ...C{i} }}" for i in range(1, chain + 1))
        + f" fragment C{chain} on Viewer {{ id }}"
    )
    assert refusal(linear) is None
    assert refusal(doubling) is not None


def test_a_repeated_directive_is_one_error() -> None:
    """Directive overloading: one refusal, not one error per repetition."""
    document = "{ viewer { id " + "@include(if: true) " * 5 + "} }"
    message = refusal(document)
    assert message == (
        "The directive @include is repeated on one location; "
        "a directive may be used once per location."
    )


def test_directives_past_the_limit_are_refused() -> None:
    fields = [f"a{i}: id @include(if: true)" for i in range(LIMITS.max_directives + 1)]
    assert refusal("{ viewer { " + " ".join(fields[:-1]) + " } }") is None
    message = refusal("{ viewer { " + " ".join(fields) + " } }")
    assert (
        message
        == f"The document uses more than {LIMITS.max_directives} directives; that is the limit."
    )


def test_deep_nesting_is_refused_before_anything_recurses() -> None:
    depth = MAX_NESTING + 1
    document = "{ viewer " + "{ ... on Viewer " * depth + "{ id }" + " }" * depth + " }"
    message = refusal(document)
    assert message is not None
    assert "nests selections" in message


async def test_an_over_budget_document_never_reaches_validation(
    gql: GraphQLClient, validations: list[Any]
) -> None:
    """Make sure the expensive rules do not run for a refused document, on both engines."""
    body = await gql.post("{ viewer { " + "id " * 100 + "} }", auth=ADMIN)

    assert "data" not in body
    assert [error["extensions"]["code"] for error in body["errors"]] == ["QUERY_TOO_COMPLEX"]
    assert "times in one selection set" in body["errors"][0]["message"]
    assert validations == []


async def test_directive_overloading_over_http_is_one_error(
    gql: GraphQLClient, validations: list[Any]
) -> None:
    body = await gql.post("{ __typename " + "@aa " * 300 + "}", auth=ADMIN)

    assert len(body["errors"]) == 1
    assert "directives" in body["errors"][0]["message"]
    assert validations == []


async def test_a_document_within_budget_is_validated_and_answered(
    gql: GraphQLClient, validations: list[Any]
) -> None:
    data = await gql.data("{ viewer { id id role } }", auth=ADMIN)
    assert data == {"viewer": {"id": "root", "role": "ADMIN"}}
    assert len(validations) == 1


def test_fragment_spreads_past_the_limit_are_refused() -> None:
    """Every pair of fragments spread into one selection set is compared: their number counts."""
    count = LIMITS.max_fragment_spreads

    def document(spreads: int) -> str:
        return (
            "{ viewer { "
            + " ".join(f"...F{i}" for i in range(spreads))
            + " } } "
            + " ".join(f"fragment F{i} on Viewer {{ f{i}: id }}" for i in range(spreads))
        )

    assert refusal(document(count)) is None
    assert refusal(document(count + 1)) == (
        f"The document spreads fragments more than {count} times; that is the limit."
    )


async def test_small_documents_are_kept_parsed_and_validated_and_large_ones_are_not(
    gql: GraphQLClient, validations: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached syntax tree costs ~350 bytes per token: only documents of the size clients
    send are kept, so distinct large documents cannot fill memory (or slow the GC)."""
    parsed: list[str] = []
    parse_document = parse  # what schema.py calls

    def counting_parse(source: str, **options: Any) -> Any:
        parsed.append(source)
        return parse_document(source, **options)

    monkeypatch.setattr(schema_module, "parse", counting_parse)
    small = "{ viewer { id role } } # " + uuid.uuid4().hex  # a text no other test sent
    large = small + " " * schema_module.CACHED_DOCUMENT_CHARS
    for document in (small, small, large, large):
        data = await gql.data(document, auth=ADMIN)
        assert data == {"viewer": {"id": "root", "role": "ADMIN"}}

    assert parsed == [small, large, large]
    assert [document.loc.source.body for document in validations] == [small, large, large]
