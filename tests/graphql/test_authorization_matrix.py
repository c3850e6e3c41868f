"""Every operation of schema.graphql against every kind of caller, one table.

A cell says what the caller sees: UNAUTHENTICATED or FORBIDDEN (top-level
errors), an OperationError code (a refusal returned as data), or "ok".
A new operation without a row here fails `test_every_operation_has_a_row`.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from graphql import build_schema

from server.domain.enums import Role
from server.graphql.schema import export_sdl
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import STORE, GraphQLClient, MovableClock, bearer, store_input
from tests.ws_client import SocketClosed, connect

CALLERS = ("anonymous", "user_on_self", "user_on_other", "admin", "service")
UNAUTH, FORBID, OK = "UNAUTHENTICATED", "FORBIDDEN", "ok"

# operation: expected outcome per caller, in CALLERS order
MATRIX: dict[str, tuple[str, str, str, str, str]] = {
    "viewer": (UNAUTH, OK, OK, OK, OK),
    "user": (UNAUTH, FORBID, FORBID, OK, FORBID),
    "githubTokens": (UNAUTH, FORBID, FORBID, OK, FORBID),
    "auditEvents": (UNAUTH, FORBID, FORBID, OK, FORBID),
    "githubTokenStats": (UNAUTH, FORBID, FORBID, OK, FORBID),
    "storeGithubToken": (UNAUTH, FORBID, FORBID, FORBID, OK),
    "revokeToken": (UNAUTH, OK, FORBID, OK, FORBID),
    "purgeUser": (UNAUTH, FORBID, FORBID, OK, FORBID),
    "startGithubConnect": (UNAUTH, OK, OK, FORBID, FORBID),
    "completeGithubConnect": (UNAUTH, OK, "ACCOUNT_MISMATCH", FORBID, FORBID),
    "disconnectGithub": (UNAUTH, OK, OK, FORBID, FORBID),
    "checkoutGithubToken": (UNAUTH, FORBID, FORBID, FORBID, OK),
    "reportGithubTokenRejected": (UNAUTH, FORBID, FORBID, FORBID, OK),
    "issueGithubCapability": (UNAUTH, FORBID, FORBID, FORBID, OK),
    "revokeGithubCapability": (UNAUTH, FORBID, FORBID, OK, OK),
    "githubTokenChanged": (UNAUTH, OK, FORBID, OK, FORBID),
}

RESULT = "{ __typename ... on OperationError { code } }"


@dataclass
class Cell:
    """One caller acting on one target user; both users hold a live token."""

    gql: GraphQLClient
    clock: MovableClock
    fake: FakeGitHub
    caller: str
    me: str
    target: str

    @property
    def auth(self) -> str | None:
        role = {
            "anonymous": None,
            "user_on_self": Role.USER,
            "user_on_other": Role.USER,
            "admin": Role.ADMIN,
            "service": Role.SERVICE,
        }[self.caller]
        return bearer(self.me, role) if role else None


Request = tuple[str, dict[str, Any]]
Operation = Callable[[Cell], Awaitable[Request]]
_github_ids = itertools.count(800_000)


async def _store_live_token(cell: Cell, user_id: str) -> None:
    github_id = next(_github_ids)
    access, refresh = cell.fake.seed_token(STANDARD_APP.client_id, github_id, f"gh{github_id}")
    variables = store_input(
        user_id,
        now=cell.clock(),
        github_user_id=str(github_id),
        github_login=f"gh{github_id}",
        access=access,
        refresh=refresh,
    )
    stored = await cell.gql.data(STORE, variables, auth=bearer("setup", Role.SERVICE))
    assert stored["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"


async def _complete_connect(cell: Cell) -> Request:
    """A state the target user started, with a code GitHub issued for it."""
    started = await cell.gql.data(
        "mutation { startGithubConnect { ... on GithubConnectStart { authorizeUrl state } } }",
        auth=bearer(cell.target, Role.USER),
    )
    start = started["startGithubConnect"]
    challenge = parse_qs(urlsplit(start["authorizeUrl"]).query)["code_challenge"][0]
    github_id = next(_github_ids)
    code = cell.fake.issue_code(
        client_id=STANDARD_APP.client_id,
        github_user_id=github_id,
        login=f"gh{github_id}",
        code_challenge=challenge,
    )
    query = "mutation($c: String!, $s: String!) { completeGithubConnect(code: $c, state: $s) %s }"
    return query % RESULT, {"c": code, "s": start["state"]}


async def _revoke_capability(cell: Cell) -> Request:
    """A capability a service issued for the target user."""
    issued = await cell.gql.data(
        "mutation($u: ID!) { issueGithubCapability(input: {userId: $u}) {"
        " ... on GithubCapabilityIssued { id } } }",
        {"u": cell.target},
        auth=bearer("setup", Role.SERVICE),
    )
    query = f"mutation($id: ID!) {{ revokeGithubCapability(id: $id) {RESULT} }}"
    return query, {"id": issued["issueGithubCapability"]["id"]}


OPERATIONS: dict[str, Operation] = {}


def _operation(name: str, query: str, variables: Callable[[Cell], dict[str, Any]]) -> None:
    async def operation(cell: Cell) -> Request:
        return query, variables(cell)

    OPERATIONS[name] = operation


_operation("viewer", "{ viewer { id role githubToken { state } } }", lambda cell: {})
_operation(
    "user", "query($id: ID!) { user(id: $id) { id email } }", lambda cell: {"id": cell.target}
)
_operation("githubTokens", "{ githubTokens(first: 5) { edges { cursor } } }", lambda cell: {})
_operation(
    "auditEvents",
    "query($u: ID) { auditEvents(userId: $u, first: 5) { edges { cursor } } }",
    lambda cell: {"u": cell.target},
)
_operation("githubTokenStats", "{ githubTokenStats { dueForRefresh } }", lambda cell: {})
_operation(
    "storeGithubToken",
    f"mutation($input: StoreGithubTokenInput!) {{ storeGithubToken(input: $input) {RESULT} }}",
    lambda cell: store_input(cell.target, now=cell.clock(), github_user_id=str(next(_github_ids))),
)
_operation(
    "revokeToken",
    f"mutation($u: ID) {{ revokeToken(input: {{userId: $u}}) {RESULT} }}",
    lambda cell: {"u": cell.target},
)
_operation(
    "purgeUser",
    f"mutation($u: ID!) {{ purgeUser(userId: $u) {RESULT} }}",
    lambda c: {"u": c.target},
)
_operation("startGithubConnect", f"mutation {{ startGithubConnect {RESULT} }}", lambda cell: {})
OPERATIONS["completeGithubConnect"] = _complete_connect
_operation("disconnectGithub", f"mutation {{ disconnectGithub {RESULT} }}", lambda cell: {})
_operation(
    "checkoutGithubToken",
    f"mutation($u: ID!) {{ checkoutGithubToken(userId: $u) {RESULT} }}",
    lambda cell: {"u": cell.target},
)
_operation(
    "reportGithubTokenRejected",
    f"mutation($u: ID!) {{ reportGithubTokenRejected(userId: $u, credentialVersion: 1) {RESULT} }}",
    lambda cell: {"u": cell.target},
)


_operation(
    "issueGithubCapability",
    f"mutation($u: ID!) {{ issueGithubCapability(input: {{userId: $u}}) {RESULT} }}",
    lambda cell: {"u": cell.target},
)
OPERATIONS["revokeGithubCapability"] = _revoke_capability


_operation(
    "githubTokenChanged",
    "subscription($u: ID) { githubTokenChanged(userId: $u) { state } }",
    lambda cell: {"u": cell.target},
)
# Subscriptions go over graphql-transport-ws; the rest are POSTed.
SUBSCRIPTIONS = frozenset({"githubTokenChanged"})


async def _first_answer_over_websocket(
    gql: GraphQLClient, query: str, variables: dict[str, Any], auth: str | None
) -> dict[str, Any]:
    """The subscription's first payload; a socket refused at connection_init is UNAUTHENTICATED."""
    async with connect(gql.http) as socket:
        try:
            await socket.init(auth)
        except SocketClosed as refused:
            code = UNAUTH if refused.code == 4403 else f"closed {refused.code}"
            return {"errors": [{"extensions": {"code": code}}]}
        return await socket.next_payload(await socket.subscribe(query, variables))


def outcome(body: dict[str, Any], field: str) -> str:
    codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
    if codes:
        assert len(set(codes)) == 1, body
        return codes[0]
    result = body["data"][field]
    if isinstance(result, dict) and result.get("__typename") == "OperationError":
        return result["code"]
    return OK


def test_every_operation_has_a_row() -> None:
    """Make sure an operation added to the schema cannot skip this table."""
    schema = build_schema(export_sdl())
    roots = (schema.query_type, schema.mutation_type, schema.subscription_type)
    operations = {name for root in roots if root is not None for name in root.fields}
    assert operations == set(MATRIX) == set(OPERATIONS)


@pytest.mark.parametrize("operation", sorted(MATRIX))
async def test_operation_answers_each_caller_as_the_matrix_says(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, operation: str
) -> None:
    seen = {}
    for index, caller in enumerate(CALLERS):
        me = f"{operation}-{index}-me"
        target = me if caller == "user_on_self" else f"{operation}-{index}-other"
        cell = Cell(gql, clock, fake_github, caller, me, target)
        await _store_live_token(cell, me)
        if target != me:
            await _store_live_token(cell, target)
        query, variables = await OPERATIONS[operation](cell)
        if operation in SUBSCRIPTIONS:
            body = await _first_answer_over_websocket(gql, query, variables, cell.auth)
        else:
            body = await gql.post(query, variables, auth=cell.auth)
        seen[caller] = outcome(body, operation)

    assert seen == dict(zip(CALLERS, MATRIX[operation], strict=True))
