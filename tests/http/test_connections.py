"""`ghvault serve`'s connections: idle strangers cannot crowd out real requests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.helpers import ALICE
from tests.serving import app_on, served
from tests.ws_client import PROTOCOL

# The cap of these tests: the attack with 1,100 sockets against the default of
# 1,000, scaled down so the suite needs no raised open-file limit.
CAP = 20
IDLE_SOCKETS = 3 * CAP
# Long enough that no idle socket of a test times out while it runs; the
# test of the timeout itself sets its own.
LONG_IDLE_SECONDS = "120"
CLOSE_BOUND_SECONDS = 30.0
MALFORMED_REQUESTS = (
    b"GET / HTTP/1.1\r\nHost ghvault\r\n\r\n",  # a header without its colon
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: ghvault\r\n\r\n",  # a line too long
    b"GET / HTTP/1.1\r\nHost: ghvault\r\nContent-Length: -1\r\n\r\n",
)


async def open_silent(base: str, count: int) -> list[tuple[asyncio.StreamReader, Any]]:
    """`count` TCP connections that send nothing."""
    host, port = base.removeprefix("http://").split(":")
    return [await asyncio.open_connection(host, int(port)) for _ in range(count)]


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed this connection (reading gives EOF), waiting a bounded time."""
    try:
        async with asyncio.timeout(CLOSE_BOUND_SECONDS):
            return await reader.read(1) == b""
    except TimeoutError:
        return False


async def get_status(base: str, path: str, **kwargs: Any) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLOSE_BOUND_SECONDS)) as http,
        http.request(kwargs.pop("method", "GET"), f"{base}{path}", **kwargs) as response,
    ):
        return response.status, await response.text()


async def test_idle_strangers_past_the_cap_do_not_stop_real_requests(sqlite_url: str) -> None:
    """Three times the cap in silent sockets: /healthz and an authenticated query still answer,
    and silent sockets are closed to make room for them."""
    app = app_on(
        sqlite_url, HTTP_MAX_CONNECTIONS=str(CAP), HTTP_IDLE_TIMEOUT_SECONDS=LONG_IDLE_SECONDS
    )
    async with served(app) as (base, _):
        silent = await open_silent(base, IDLE_SOCKETS)
        health = await get_status(base, "/healthz")
        graphql = await get_status(
            base,
            "/graphql",
            method="POST",
            json={"query": "{ viewer { id } }"},
            headers={"Authorization": ALICE},
        )
        closed = [await closed_by_server(reader) for reader, _ in silent[: IDLE_SOCKETS - CAP]]
        for _, writer in silent:
            writer.close()

    assert health == (200, '{"status": "ok"}')
    assert graphql[0] == 200
    assert json.loads(graphql[1])["data"]["viewer"]["id"] == "alice"
    # The oldest silent sockets made room: all but the newest CAP of them.
    assert all(closed)


async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    sqlite_url: str,
) -> None:
    """No request at all, or headers that never end: both closed, without a request."""
    app = app_on(sqlite_url, HTTP_IDLE_TIMEOUT_SECONDS="0.5")
    async with served(app) as (base, _):
        (silent, silent_writer), (slow, slow_writer) = await open_silent(base, 2)
        slow_writer.write(b"GET /healthz HTTP/1.1\r\nHost: ghvault\r\n")  # and never the end
        await slow_writer.drain()
        closed = [await closed_by_server(silent), await closed_by_server(slow)]
        silent_writer.close()
        slow_writer.close()
    assert closed == [True, True]


async def test_a_keep_alive_connection_is_closed_once_idle_for_the_timeout(
    sqlite_url: str,
) -> None:
    """A client that made a request and then says nothing more loses its connection."""
    app = app_on(sqlite_url, HTTP_IDLE_TIMEOUT_SECONDS="0.5")
    async with served(app) as (base, _):
        ((reader, writer),) = await open_silent(base, 1)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: ghvault\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        # Read the answer to its end; then nothing but the close may come.
        await reader.readuntil(b'{"status": "ok"}')
        closed = await closed_by_server(reader)
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 200")
    assert closed


async def test_at_the_cap_with_every_connection_in_a_request_a_newcomer_gets_503(
    sqlite_url: str,
) -> None:
    """Connections in a request are never cut to make room: the newcomer is told to come back."""
    app = app_on(sqlite_url, HTTP_MAX_CONNECTIONS="2", HTTP_IDLE_TIMEOUT_SECONDS=LONG_IDLE_SECONDS)
    async with served(app) as (base, _), aiohttp.ClientSession() as http:
        # Two authenticated sockets: in a request for as long as they are open.
        sockets = [await http.ws_connect(f"{base}/graphql", protocols=[PROTOCOL]) for _ in "ab"]
        for socket in sockets:
            await socket.send_json({"type": "connection_init", "payload": {"Authorization": ALICE}})
            assert (await socket.receive_json())["type"] == "connection_ack"
        status, body = await get_status(base, "/healthz")
        still_open = [not socket.closed for socket in sockets]
        for socket in sockets:
            await socket.close()
    assert (status, body) == (503, "too many connections\n")
    assert still_open == [True, True]


async def test_a_socket_waiting_for_connection_init_makes_room(sqlite_url: str) -> None:
    """Until its connection_init is accepted, a websocket counts as idle."""
    app = app_on(sqlite_url, HTTP_MAX_CONNECTIONS="2", HTTP_IDLE_TIMEOUT_SECONDS=LONG_IDLE_SECONDS)
    async with served(app) as (base, _), aiohttp.ClientSession() as http:
        anonymous = [await http.ws_connect(f"{base}/graphql", protocols=[PROTOCOL]) for _ in "ab"]
        status, _ = await get_status(base, "/healthz")
        oldest = await anonymous[0].receive(timeout=CLOSE_BOUND_SECONDS)
        for socket in anonymous:
            await socket.close()
    assert status == 200
    # Cut, not closed by the protocol (as the connection_init timeout would, with 4408).
    assert oldest.type is aiohttp.WSMsgType.CLOSED


async def test_a_malformed_request_is_one_info_line_without_a_traceback(
    sqlite_url: str, log_output: Any
) -> None:
    """Bytes that are not HTTP get a 400 and one INFO line; nothing an attacker sends is ERROR."""
    async with served(app_on(sqlite_url)) as (base, _):
        answers = []
        for garbage in MALFORMED_REQUESTS:
            ((reader, writer),) = await open_silent(base, 1)
            writer.write(garbage)
            await writer.drain()
            answers.append(await reader.read())
            writer.close()
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    malformed = [line for line in lines if line["message"].startswith("malformed HTTP request")]
    assert [answer.split(b"\r\n")[0].split(b" ", 1)[1] for answer in answers] == [
        b"400 Bad Request"
    ] * len(MALFORMED_REQUESTS)
    assert [line["level"] for line in malformed] == ["INFO"] * len(MALFORMED_REQUESTS)
    assert not [line for line in lines if line["level"] == "ERROR" or "exception" in line]
