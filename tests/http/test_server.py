"""`serve` stopping on SIGTERM: sockets told to go away, requests given the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import aiohttp
import pytest
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


def _slow_route(app: web.Application, seconds: float, started: asyncio.Event) -> None:
    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(seconds)
        return web.Response(text="finished")

    app.router.add_get("/slow", slow)


async def test_a_request_in_flight_finishes_within_the_grace_period(sqlite_url: str) -> None:
    started = asyncio.Event()
    app = app_on(sqlite_url, SHUTDOWN_GRACE_SECONDS="30")
    _slow_route(app, 0.5, started)
    async with served(app) as (base, serving), aiohttp.ClientSession() as http:
        answer = asyncio.create_task(http.get(f"{base}/slow"))
        await started.wait()
        stop_serving()
        response = await asyncio.wait_for(answer, STOP_BOUND_SECONDS)
        body = await response.text()
        await asyncio.wait_for(serving, STOP_BOUND_SECONDS)
    assert (response.status, body) == (200, "finished")


async def test_a_request_past_the_grace_period_is_cut_and_the_server_stops(
    sqlite_url: str, log_output: Any
) -> None:
    """A request that would take an hour does not keep a stopping server up."""
    started = asyncio.Event()
    app = app_on(sqlite_url, SHUTDOWN_GRACE_SECONDS="0.5")
    _slow_route(app, 3600, started)
    async with served(app) as (base, serving), aiohttp.ClientSession() as http:
        answer = asyncio.create_task(http.get(f"{base}/slow"))
        await started.wait()
        stop_serving()
        await asyncio.wait_for(serving, STOP_BOUND_SECONDS)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(answer, STOP_BOUND_SECONDS)
    assert "grace period of 0.5 s over: cancelling 1 requests in flight" in log_output.getvalue()
