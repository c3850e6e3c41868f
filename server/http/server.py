"""Serving the app: listen, log "listening" and "stopped", stop on SIGTERM or SIGINT.

Start-up failures an operator can fix (the port is taken, the database is
unreachable or not migrated) end in one exception whose message is the line
to print; `ghvault serve` prints it and exits non-zero.

A stop is bounded by SHUTDOWN_GRACE_SECONDS: the port closes, open sockets
are told the server is going away (clients reconnect elsewhere or after the
restart), requests in flight may finish within the grace period, and what
is still running then is cancelled.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket

from aiohttp import web

from server.http.appkeys import SETTINGS
from server.http.connections import ConnectionLimit
from server.http.descriptors import AcceptFailures, connection_cap, raise_open_file_limit
from server.http.logs import RedactingAccessLogger
from server.http.websocket import close_open_sockets

logger = logging.getLogger("ghvault.server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After the grace period, what aiohttp gets to cancel the requests still running.
CANCEL_SECONDS = 0.5


class CannotListen(Exception):
    """The address could not be bound; the message is one line for the operator."""


async def serve(app: web.Application, *, host: str, port: int, reuse_port: bool = False) -> None:
    """Run `app` on host:port until SIGTERM or SIGINT, then shut it down cleanly.

    With `reuse_port`, other processes may listen on the same port (workers).
    """
    limits = app[SETTINGS].serving
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    previous_exception_handler = loop.get_exception_handler()
    loop.set_exception_handler(AcceptFailures(previous_exception_handler))
    connections = ConnectionLimit(connection_cap(limits.max_connections, raise_open_file_limit()))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=CANCEL_SECONDS)
    listener: asyncio.Server | None = None
    try:
        await runner.setup()  # runs the app's start-up: the database is checked here
        assert runner.server is not None
        accept = connections.protocol_factory(
            runner.server,
            # aiohttp's keep-alive timer also runs before a connection's first request.
            keepalive_timeout=limits.idle_timeout_seconds,
            access_log_class=RedactingAccessLogger,
        )
        try:
            listener = await loop.create_server(accept, host, port, reuse_port=reuse_port or None)
        except OSError as exc:
            # asyncio rewords bind errors around the address; the system's
            # words for the errno are the short, clear part (resolver errors
            # carry theirs in strerror).
            if isinstance(exc, socket.gaierror) or not exc.errno:
                reason = exc.strerror or type(exc).__name__
            else:
                reason = os.strerror(exc.errno)
            raise CannotListen(f"cannot listen on {host}:{port}: {reason.lower()}") from None
        settle_start_up_objects()
        bound_port = _bound_port(listener, default=port)
        url = f"http://{host}:{bound_port}/graphql"
        logger.info("listening on %s", url, extra={"address": f"{host}:{bound_port}"})
        await stop.wait()
        logger.info(
            "stopping: finishing requests in flight (up to %g s)", limits.shutdown_grace_seconds
        )
        listener.close()
        await _finish_in_flight(app, connections, limits.shutdown_grace_seconds)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if listener is not None:
            listener.close()
        await runner.cleanup()
        loop.set_exception_handler(previous_exception_handler)
    logger.info("stopped")


async def _finish_in_flight(
    app: web.Application, connections: ConnectionLimit, grace_seconds: float
) -> None:
    """Close the sockets, then let requests finish within the grace period."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    await close_open_sockets(app, within=grace_seconds)
    if not await connections.drained(within=max(0.0, deadline - loop.time())):
        logger.warning(
            "grace period of %g s over: cancelling %d requests in flight",
            grace_seconds,
            connections.in_request,
        )


def settle_start_up_objects() -> None:
    """Leave what start-up made (modules, the schema, pools) out of garbage collection.

    They live as long as the process, yet every full collection would walk all
    of them again: with the 300,000 objects of a started server that is a
    pause of 50-100 ms for whichever request triggered it. Frozen, a full
    collection only walks what requests made (~10 ms at worst measured).
    """
    gc.collect()
    gc.freeze()


def _bound_port(listener: asyncio.Server, *, default: int) -> int:
    """The port actually bound (PORT=0 asks the system for a free one)."""
    for listening in listener.sockets:
        address = listening.getsockname()
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return default
