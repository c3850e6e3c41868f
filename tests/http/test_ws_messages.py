"""graphql-transport-ws messages of any shape: refused with 4400 and one line, no traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.http.ws_messages import MAX_MESSAGES_BEFORE_INIT, message_problem
from tests.helpers import ALICE, GraphQLClient
from tests.ws_client import SocketClosed, connect

QUERY = "subscription { githubTokenChanged { state } }"

VALID = [
    {"type": "connection_init"},
    {"type": "connection_init", "payload": None},
    {"type": "connection_init", "payload": {"Authorization": "Bearer x"}},
    {"type": "ping"},
    {"type": "pong", "payload": {"at": 1}},
    {"type": "subscribe", "id": "1", "payload": {"query": QUERY}},
    {
        "type": "subscribe",
        "id": "a-b",
        "payload": {"query": QUERY, "variables": None, "operationName": "W", "extensions": {}},
    },
    {"type": "complete", "id": "1"},
]

# Malformed before connection_init: nothing of an anonymous socket may reach a traceback.
BEFORE_INIT = [
    "[1,2]",
    "[]",
    "1",
    '"connection_init"',
    "null",
    "{}",
    '{"type": 1}',
    '{"type": ["connection_init"]}',
    '{"type": null}',
    '{"type": "connection_init", "payload": "Bearer x"}',
    '{"type": "connection_init", "payload": [1]}',
    '{"type": "ping", "payload": "x"}',
    '{"type": "pong", "payload": 5}',
    '{"type": "next", "id": "1", "payload": {}}',
    '{"type": "' + "x" * 500 + '"}',
]

# Malformed after an accepted connection_init.
AFTER_INIT = [
    "[1,2]",
    '{"type": "subscribe", "id": "1", "payload": "' + QUERY + '"}',
    '{"type": "subscribe", "id": "1", "payload": null}',
    '{"type": "subscribe", "id": "1"}',
    '{"type": "subscribe", "id": ["1"], "payload": {"query": "' + QUERY + '"}}',
    '{"type": "subscribe", "id": {"a": 1}, "payload": {"query": "' + QUERY + '"}}',
    '{"type": "subscribe", "id": 1, "payload": {"query": "' + QUERY + '"}}',
    '{"type": "subscribe", "id": "", "payload": {"query": "' + QUERY + '"}}',
    '{"type": "subscribe", "payload": {"query": "' + QUERY + '"}}',
    '{"type": "subscribe", "id": "1", "payload": {"query": 5}}',
    '{"type": "subscribe", "id": "1", "payload": {"query": ["' + QUERY + '"]}}',
    '{"type": "subscribe", "id": "1", "payload": {}}',
    '{"type": "subscribe", "id": "1", "payload": {"query": "' + QUERY + '", "variables": [1]}}',
    '{"type": "subscribe", "id": "1", "payload": {"query": "' + QUERY + '", "variables": "x"}}',
    '{"type": "subscribe", "id": "1", "payload": {"query": "' + QUERY + '", "operationName": 5}}',
    '{"type": "subscribe", "id": "1", "payload": {"query": "' + QUERY + '", "extensions": 5}}',
    '{"type": "complete"}',
    '{"type": "complete", "id": ["1"]}',
    '{"type": "connection_ack"}',
]


@pytest.mark.parametrize("message", VALID, ids=[json.dumps(message) for message in VALID])
def test_messages_of_the_protocol_pass(message: dict[str, Any]) -> None:
    assert message_problem(message) is None


@pytest.mark.parametrize("frame", BEFORE_INIT + AFTER_INIT)
def test_messages_outside_the_protocol_are_named(frame: str) -> None:
    """Make sure every malformed shape is refused with a reason that quotes nothing of it."""
    problem = message_problem(json.loads(frame))
    assert problem
    assert "x" * 20 not in problem


def _refusals(log_output: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The log's lines saying a socket was closed with 4400, and its ERROR or traceback lines."""
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    closed = [line for line in lines if "websocket closed with 4400" in line["message"]]
    loud = [line for line in lines if line["level"] == "ERROR" or "exception" in line]
    return closed, loud


@pytest.mark.parametrize(
    ("frame", "authenticated"),
    [(frame, False) for frame in BEFORE_INIT] + [(frame, True) for frame in AFTER_INIT],
)
async def test_a_malformed_message_closes_the_socket_with_4400(
    sqlite_gql: GraphQLClient, log_output: Any, frame: str, authenticated: bool
) -> None:
    """Before connection_init (from anyone) and after it: one INFO line, nothing louder."""
    async with connect(sqlite_gql.http) as socket:
        if authenticated:
            assert (await socket.init(ALICE))["type"] == "connection_ack"
        await socket.socket.send_str(frame)
        closed = await socket.closed()
    lines, loud = _refusals(log_output)
    assert closed.code == 4400
    assert [line["level"] for line in lines] == ["INFO"]
    assert loud == []
    assert len(socket.frames) == int(authenticated)  # the acknowledgement, and nothing else


async def test_a_null_connection_init_payload_is_a_refusal_not_a_bad_message(
    sqlite_gql: GraphQLClient,
) -> None:
    """graphql-ws may send `payload: null`: that carries no credentials, so 4403."""
    async with connect(sqlite_gql.http) as socket:
        await socket.send({"type": "connection_init", "payload": None})
        assert (await socket.closed()).code == 4403


async def test_a_long_id_used_twice_closes_with_a_reason_a_close_frame_can_carry(
    sqlite_gql: GraphQLClient,
) -> None:
    """Strawberry quotes the id in its 4409 reason; a close frame holds at most 123 bytes."""
    operation = {"id": "7" * 1000, "type": "subscribe", "payload": {"query": QUERY}}
    async with connect(sqlite_gql.http) as socket:
        assert (await socket.init(ALICE))["type"] == "connection_ack"
        await socket.send(operation)
        await socket.send(operation)
        try:
            while True:
                await socket.receive()
        except SocketClosed as closed:
            code, reason = closed.code, closed.reason
    assert code == 4409
    assert 0 < len(reason.encode()) <= 123


async def test_a_socket_that_never_sends_connection_init_gets_few_messages_read(
    sqlite_gql: GraphQLClient, log_output: Any
) -> None:
    """Pings are answered before connection_init, but not without end: each costs decoding."""
    async with connect(sqlite_gql.http) as socket:
        for _ in range(MAX_MESSAGES_BEFORE_INIT + 1):
            await socket.send({"type": "ping"})
        closed = await socket.closed()
    lines, loud = _refusals(log_output)
    assert [json.loads(frame) for frame in socket.frames] == [
        {"type": "pong"}
    ] * MAX_MESSAGES_BEFORE_INIT
    assert closed.code == 4400
    assert [line["level"] for line in lines] == ["INFO"]
    assert loud == []


async def test_an_authenticated_socket_may_send_any_number_of_messages(
    sqlite_gql: GraphQLClient,
) -> None:
    async with connect(sqlite_gql.http) as socket:
        assert (await socket.init(ALICE))["type"] == "connection_ack"
        for _ in range(3 * MAX_MESSAGES_BEFORE_INIT):
            await socket.send({"type": "ping"})
            assert (await socket.socket.receive_json(timeout=15)) == {"type": "pong"}
