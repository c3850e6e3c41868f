"""`serve` stopping on SIGTERM: sockets told to go away, requests given the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import aiohttp
from aiohttp import web

from tests.helpers import ALICE
from tests.serving import STOP_BOUND_SECONDS, app_on, served
from tests.ws_client import GraphQLWebSocket

GOING_AWAY = 1001


def stop_serving() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler, as an operator's stop


async def test_sigterm_closes_an_open_subscription_with_going_away(sqlite_url: str) -> None:
    """graphql-ws reconnects after 1001; a socket left open would hold the stop up."""
    async with (
        served(app_on(sqlite_url)) as (base, serving),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/graphql", protocols=["graphql-transport-ws"]) as raw,
        http.ws_connect(f"{base}/graphql", protocols=["graphql-transport-ws"]) as anonymous,
    ):
        socket = GraphQLWebSocket(raw)
        assert (await socket.init(ALICE))["type"] == "connection_ack"
        operation = await socket.subscribe("subscription { githubTokenChanged { state } }")
        await socket.next_payload(operation)
        stop_serving()
        closed = await socket.closed()
        anonymous_close = await anonymous.receive(timeout=STOP_BOUND_SECONDS)
        await asyncio.wait_for(serving, STOP_BOUND_SECONDS)
    assert (closed.code, closed.reason) == (GOING_AWAY, "the server is shutting down")
    assert anonymous_close.type is aiohttp.WSMsgType.CLOSE
    assert anonymous_close.data == GOING_AWAY


async def stop_during_a_request(app: web.Application, seconds: float) -> tuple[int, str] | None:
    """SIGTERM while a request that takes `seconds` is in flight, once the server has stopped:
    the request's answer (status and body), or None when it was cut off."""
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(seconds)
        return web.Response(text="finished")

    async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
        async with http.get(url) as response:
            return response.status, await response.text()

    app.router.add_get("/slow", slow)
    async with served(app) as (base, serving), aiohttp.ClientSession() as http:
        answer = asyncio.create_task(get(http, f"{base}/slow"))
        await started.wait()
        stop_serving()
        await asyncio.wait_for(serving, STOP_BOUND_SECONDS)
        try:
            return await asyncio.wait_for(answer, STOP_BOUND_SECONDS)
        except aiohttp.ClientError:
            return None


async def test_a_request_in_flight_finishes_within_the_grace_period(sqlite_url: str) -> None:
    app = app_on(sqlite_url, SHUTDOWN_GRACE_SECONDS="30")
    assert await stop_during_a_request(app, 0.5) == (200, "finished")


async def test_a_request_past_the_grace_period_is_cut_and_the_server_stops(
    sqlite_url: str, log_output: Any
) -> None:
    """A request that would take an hour does not keep a stopping server up."""
    app = app_on(sqlite_url, SHUTDOWN_GRACE_SECONDS="0.5")
    assert await stop_during_a_request(app, 3600) is None
    assert "grace period of 0.5 s over: cancelling 1 requests in flight" in log_output.getvalue()
