"""Errors about bad input name the place and the expected type, never the value."""

from __future__ import annotations

import io

import pytest

from tests.helpers import ADMIN, SERVICE, GraphQLClient, MovableClock, random_token, store_input

AUDIT = "query($first: Int!) { auditEvents(first: $first) { edges { cursor } } }"
TOKEN = "query($a: GithubAppType!) { viewer { githubToken(appType: $a) { state } } }"
STORE = (
    "mutation($input: StoreGithubTokenInput!) { storeGithubToken(input: $input) { __typename } }"
)


def long_token() -> str:
    """Longer than graphql-core's 240-character cut, so its tail used to come back in clear."""
    return random_token("ghu_", 250)


def tail_leaked(token: str, text: str) -> bool:
    return any(token[i : i + 12] in text for i in range(4, len(token) - 12))


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        (
            AUDIT,
            lambda token: {"first": token},
            "Variable '$first' has an invalid value at 'first': expected Int!.",
        ),
        (
            AUDIT,
            lambda token: {"first": [token, token]},
            "Variable '$first' has an invalid value at 'first': expected Int!.",
        ),
        (
            AUDIT,
            lambda token: {"first": {"nested": [token]}},
            "Variable '$first' has an invalid value at 'first': expected Int!.",
        ),
        (
            TOKEN,
            lambda token: {"a": token},
            "Variable '$a' has an invalid value at 'a': expected GithubAppType!.",
        ),
        (
            TOKEN,
            lambda token: {"a": "x" * 200 + token},
            "Variable '$a' has an invalid value at 'a': expected GithubAppType!.",
        ),
    ],
    ids=["string", "list", "object", "enum", "prefix-past-the-cut"],
)
async def test_a_bad_variable_is_described_without_its_value(
    gql: GraphQLClient, log_output: io.StringIO, query: str, variables, message: str
) -> None:
    """Make sure neither the answer nor the log carries any part of the value."""
    token = long_token()

    body = await gql.post(query, variables(token), auth=ADMIN)

    assert [error["message"] for error in body["errors"]] == [message]
    assert "data" not in body
    assert not tail_leaked(token, str(body))
    assert not tail_leaked(token, log_output.getvalue())
    assert "[REDACTED]" not in str(body), "nothing needed redacting"


async def test_each_bad_place_in_an_input_object_is_named(
    gql: GraphQLClient, clock: MovableClock, log_output: io.StringIO
) -> None:
    token = long_token()
    variables = store_input("alice", now=clock())
    variables["input"]["accessTokenExpiresAt"] = token
    variables["input"]["appType"] = token

    body = await gql.post(STORE, variables, auth=SERVICE)

    assert sorted(error["message"] for error in body["errors"]) == [
        "Variable '$input' has an invalid value at 'input.accessTokenExpiresAt': "
        "expected DateTime.",
        "Variable '$input' has an invalid value at 'input.appType': expected GithubAppType!.",
    ]
    assert not tail_leaked(token, str(body) + log_output.getvalue())


async def test_missing_and_unknown_fields_are_named_from_the_schema(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    token = long_token()
    missing = store_input("alice", now=clock())
    del missing["input"]["githubLogin"]
    unknown = store_input("alice", now=clock())
    unknown["input"][token] = token

    missing_body = await gql.post(STORE, missing, auth=SERVICE)
    unknown_body = await gql.post(STORE, unknown, auth=SERVICE)

    assert [error["message"] for error in missing_body["errors"]] == [
        "Variable '$input' has an invalid value at 'input': "
        "StoreGithubTokenInput requires 'githubLogin'."
    ]
    assert [error["message"] for error in unknown_body["errors"]] == [
        "Variable '$input' has an invalid value at 'input': "
        "StoreGithubTokenInput has no field of one of the names given."
    ]
    assert not tail_leaked(token, str(unknown_body))


async def test_a_long_token_in_a_literal_is_redacted_whole(
    gql: GraphQLClient, log_output: io.StringIO
) -> None:
    """A literal is printed whole (never shortened), so redaction takes all of it."""
    token = long_token()

    body = await gql.post(
        f'{{ auditEvents(first: "{token}") {{ edges {{ cursor }} }} }}', auth=ADMIN
    )

    assert body["errors"]
    assert not tail_leaked(token, str(body) + log_output.getvalue())


async def test_good_variables_still_run(gql: GraphQLClient) -> None:
    data = await gql.data(AUDIT, {"first": 5}, auth=ADMIN)
    assert data == {"auditEvents": {"edges": []}}
