"""Claims of every type: a request and a socket judge a JWT alike, and neither crashes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.auth import mint_token
from server.domain.enums import Role
from tests.helpers import JWT_SECRET, GraphQLClient
from tests.ws_client import SocketClosed, connect

IN_AN_HOUR = int(time.time()) + 3600

# (claims, accepted): the signature is good in every case, only the claims differ.
CLAIMS: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"exp": IN_AN_HOUR + 0.5}, True),
    ({"exp": 10**13}, True),  # the year 318857: past what datetime holds
    ({"exp": str(IN_AN_HOUR)}, False),  # PyJWT alone takes numeric strings
    ({"exp": 10**400}, False),  # valid JSON, no float can hold it
    ({"exp": float("inf")}, False),  # PyJWT writes Infinity, Python reads it
    ({"exp": float("nan")}, False),
    ({"exp": True}, False),
    ({"exp": None}, False),
    ({"exp": [IN_AN_HOUR]}, False),
    ({"exp": {"at": IN_AN_HOUR}}, False),
    ({"exp": -(10**13)}, False),
    ({"nbf": "soon"}, False),
    ({"iat": [1]}, False),
    ({"role": ["user", "admin"]}, False),
    ({"role": {"user": True}}, False),
    ({"sub": ["alice"]}, False),
    ({"email": ["a@example.com"], "name": 5}, True),
]


def signed(claims: dict[str, Any]) -> str:
    """A bearer JWT for alice (a USER, for an hour) with `claims` added or replaced."""
    token = mint_token(
        JWT_SECRET.encode(),
        sub="alice",
        role=Role.USER,
        now=datetime.now(UTC),
        ttl=timedelta(hours=1),
        extra=claims,
    )
    return f"Bearer {token}"


async def over_http(gql: GraphQLClient, authorization: str) -> str:
    response = await gql.http.post(
        "/graphql",
        json={"query": "{ viewer { id } }"},
        headers={"Authorization": authorization},
    )
    if response.status == 401:
        return "refused"
    body = await response.json()
    return "accepted" if body["data"]["viewer"]["id"] == "alice" else f"{response.status} {body}"


async def over_a_socket(gql: GraphQLClient, authorization: str) -> str:
    """Accepted means acknowledged and then served: the expiry timer is running too."""
    async with connect(gql.http) as socket:
        try:
            acknowledged = await socket.init(authorization)
        except SocketClosed as closed:
            return "refused" if closed.code == 4403 else f"closed with {closed.code}"
        operation = await socket.subscribe("subscription { githubTokenChanged { state } }")
        payload = await socket.next_payload(operation)
    if acknowledged["type"] != "connection_ack" or "errors" in payload:
        return f"{acknowledged} {payload}"
    return "accepted"


@pytest.mark.parametrize(
    ("claims", "accepted"), CLAIMS, ids=[json.dumps(claims, default=str) for claims, _ in CLAIMS]
)
async def test_requests_and_sockets_judge_claims_alike(
    sqlite_gql: GraphQLClient, log_output: Any, claims: dict[str, Any], accepted: bool
) -> None:
    authorization = signed(claims)
    expected = "accepted" if accepted else "refused"
    by_request = await over_http(sqlite_gql, authorization)
    by_socket = await over_a_socket(sqlite_gql, authorization)
    assert (by_request, by_socket) == (expected, expected)
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert not [line for line in lines if line["level"] == "ERROR" or "exception" in line]
