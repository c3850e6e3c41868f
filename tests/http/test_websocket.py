"""Subscription sockets: how big a message may be, before and after connection_init."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.config import GraphQLLimits
from server.http.graphql_view import MAX_JSON_CONTAINERS
from tests.helpers import ALICE, GraphQLClient
from tests.ws_client import connect

MAX_MESSAGE_BYTES = GraphQLLimits().max_body_bytes
MESSAGE_TOO_BIG = 1009


def ping_of(size: int) -> str:
    """A ping whose payload nests as many empty lists as fit in `size` bytes: costly to decode."""
    head, tail = '{"type": "ping", "payload": {"p": [', "]}}"
    lists = (size - len(head) - len(tail) + 1) // 3
    return head + ",".join(["[]"] * lists) + tail


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every text json.loads decodes while the test runs."""
    lengths: list[int] = []
    loads = json.loads

    def counting_loads(text: str | bytes, **kwargs: Any) -> Any:
        lengths.append(len(text))
        return loads(text, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    return lengths


def test_the_pings_are_the_sizes_they_claim() -> None:
    assert MAX_MESSAGE_BYTES - 3 <= len(ping_of(MAX_MESSAGE_BYTES)) <= MAX_MESSAGE_BYTES
    json.loads(ping_of(MAX_MESSAGE_BYTES))


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "authenticated"])
async def test_a_message_over_the_body_limit_is_refused_unread(
    sqlite_gql: GraphQLClient, log_output: Any, decoded: list[int], authenticated: bool
) -> None:
    """Make sure a frame over the body limit closes the socket (1009), undecoded, as a body
    over it is a 413. (Just over, so the client's send completes before the close.)"""
    frame = ping_of(MAX_MESSAGE_BYTES + 1024)
    async with connect(sqlite_gql.http) as socket:
        if authenticated:
            assert (await socket.init(ALICE))["type"] == "connection_ack"
        await socket.socket.send_str(frame)
        closed = await socket.closed()
    assert closed.code == MESSAGE_TOO_BIG
    assert len(frame) not in decoded
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert [line["level"] for line in lines if "closed with 1009" in line["message"]] == ["INFO"]
    assert not [line for line in lines if line["level"] == "ERROR"]


async def test_a_message_just_under_the_limit_is_answered(sqlite_gql: GraphQLClient) -> None:
    """The limit is the body limit, not less: a ping of a few KB under it gets its pong."""
    small = '{"type": "ping", "payload": {"p": "' + "x" * (MAX_MESSAGE_BYTES - 100) + '"}}'
    async with connect(sqlite_gql.http) as socket:
        await socket.socket.send_str(small)
        answer = await socket.socket.receive_json(timeout=15)
    assert answer == {"type": "pong"}


async def test_a_message_of_too_many_arrays_is_refused_before_decoding(
    sqlite_gql: GraphQLClient, log_output: Any, decoded: list[int]
) -> None:
    """Under the size limit, yet ~20,000 lists: refused as a bad message (4400), not decoded."""
    frame = ping_of(MAX_MESSAGE_BYTES - 64)
    assert frame.count("[") > MAX_JSON_CONTAINERS
    async with connect(sqlite_gql.http) as socket:
        await socket.socket.send_str(frame)
        closed = await socket.closed()
    assert closed.code == 4400
    assert len(frame) not in decoded
    assert '"level": "ERROR"' not in log_output.getvalue()
