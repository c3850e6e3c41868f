"""githubTokens for admins: filters, keyset pages, and bounds on `first`."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from tests.helpers import (
    ADMIN,
    REVOKE,
    SERVICE,
    STORE,
    GraphQLClient,
    MovableClock,
    error_codes,
    store_input,
)

TOKENS = """query($filter: GithubTokenFilter, $first: Int!, $after: String) {
  githubTokens(filter: $filter, first: $first, after: $after) {
    edges { cursor node { userId appType state githubLogin } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def _all_pages(gql: GraphQLClient, first: int, token_filter: dict | None = None) -> list:
    nodes, after = [], None
    while True:
        variables = {"filter": token_filter, "first": first, "after": after}
        page = (await gql.data(TOKENS, variables, auth=ADMIN))["githubTokens"]
        nodes += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


async def _store(gql: GraphQLClient, clock: MovableClock, count: int) -> None:
    for index in range(count):
        variables = store_input(
            f"user{index:02}",
            now=clock(),
            github_user_id=str(5000 + index),
            github_login=f"login{index:02}",
        )
        await gql.data(STORE, variables, auth=SERVICE)
        if index % 3 == 0:
            clock.advance(timedelta(seconds=1))  # some share a created_at, some don't


async def test_pages_walk_every_token_once_newest_first(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Walking the pages yields every row once, in created order reversed."""
    await _store(gql, clock, 7)

    nodes = await _all_pages(gql, first=3)

    users = [node["userId"] for node in nodes]
    assert sorted(users) == [f"user{i:02}" for i in range(7)]
    assert len(set(users)) == 7
    # Stored at three instants: {00}, then {01, 02, 03}, then {04, 05, 06}.
    assert set(users[:3]) == {"user04", "user05", "user06"}
    assert set(users[3:6]) == {"user01", "user02", "user03"}
    assert users[6] == "user00"


async def test_filters_by_state_login_and_app_type(gql: GraphQLClient, clock: MovableClock) -> None:
    """Derived states filter stored rows; NOT_CONNECTED matches nothing."""
    await _store(gql, clock, 4)
    await gql.data(REVOKE, {"input": {"userId": "user01"}}, auth=ADMIN)

    revoked = await _all_pages(gql, 10, {"state": "REVOKED"})
    active = await _all_pages(gql, 10, {"state": "ACTIVE"})
    by_login = await _all_pages(gql, 10, {"githubLogin": "LOGIN02"})
    no_pattern = await _all_pages(gql, 10, {"githubLogin": "login0_"})
    by_id = await _all_pages(gql, 10, {"githubUserId": "5003", "appType": "STANDARD"})
    lite = await _all_pages(gql, 10, {"appType": "LITE"})
    nothing = await _all_pages(gql, 10, {"state": "NOT_CONNECTED"})

    assert [n["userId"] for n in revoked] == ["user01"]
    assert sorted(n["userId"] for n in active) == ["user00", "user02", "user03"]
    assert [n["userId"] for n in by_login] == ["user02"]
    assert no_pattern == []
    assert [n["userId"] for n in by_id] == ["user03"]
    assert lite == nothing == []

    clock.advance(timedelta(hours=9))
    expired = await _all_pages(gql, 10, {"state": "EXPIRED"})
    assert sorted(n["userId"] for n in expired) == ["user00", "user02", "user03"]


@pytest.mark.parametrize("first", [0, -1, 101, 10_000])
async def test_first_outside_1_to_100_is_a_clear_error(gql: GraphQLClient, first: int) -> None:
    body = await gql.post(TOKENS, {"first": first}, auth=ADMIN)
    assert error_codes(body) == ["INVALID_INPUT"]
    assert "first must be between 1 and 100" in body["errors"][0]["message"]


@pytest.mark.parametrize("cursor", ["garbage", "WzFd", "eyJ4IjoxfQ"])
async def test_a_foreign_cursor_is_a_clear_error(gql: GraphQLClient, cursor: str) -> None:
    body = await gql.post(TOKENS, {"first": 5, "after": cursor}, auth=ADMIN)
    assert error_codes(body) == ["INVALID_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "after"


AUDIT = "query($after: String) { auditEvents(first: 5, after: $after) { edges { cursor } } }"


def _cursor(json_text: str) -> str:
    return base64.urlsafe_b64encode(json_text.encode()).decode().rstrip("=")


HOSTILE_CURSORS = {
    "deep-json": _cursor("[" * 10_000 + "]" * 10_000),
    "deep-json-short": _cursor("[" * 150 + "]" * 150),
    "huge-int": _cursor(f"[{2**64}]"),
    "past-32-bits": _cursor(f"[{2**31}]"),
    "huge-negative-int": _cursor(f"[{-(2**70)}]"),
    "many-digits": _cursor("[" + "9" * 5000 + "]"),
    "bool": _cursor("[true]"),
    "float": _cursor("[1.5]"),
    "nested-key": _cursor('[["2026-01-01T00:00:00+00:00"], "x"]'),
    "huge-int-in-a-pair": _cursor(f'["2026-01-01T00:00:00+00:00", {2**64}]'),
}


@pytest.mark.parametrize("cursor", HOSTILE_CURSORS.values(), ids=HOSTILE_CURSORS.keys())
@pytest.mark.parametrize("query", [TOKENS, AUDIT], ids=["githubTokens", "auditEvents"])
async def test_a_hostile_cursor_is_invalid_input(
    gql: GraphQLClient, clock: MovableClock, query: str, cursor: str
) -> None:
    """Make sure deep JSON, out-of-range integers and odd types in `after` are 4xx, not INTERNAL."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)

    body = await gql.post(query, {"first": 5, "after": cursor}, auth=ADMIN)

    assert error_codes(body) == ["INVALID_INPUT"], body
    assert body["errors"][0]["extensions"]["field"] == "after"


async def test_the_largest_serial_id_is_still_a_cursor(gql: GraphQLClient) -> None:
    body = await gql.post(AUDIT, {"after": _cursor(f"[{2**31 - 1}]")}, auth=ADMIN)
    assert "errors" not in body, body
    assert body["data"] == {"auditEvents": {"edges": []}}
