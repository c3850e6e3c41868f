"""`serve()` in the test's own process: the real listening path without a subprocess.

The connection cap, the idle timeout, malformed-request logging and the
shutdown on SIGTERM belong to `serve`, not to the application that
pytest-aiohttp's test server runs; these helpers start it on a free port
and stop it the way an operator does, with SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from server.config import Settings
from server.http.app import create_app
from server.http.server import serve
from tests.helpers import base_env

# Bounds on waiting, so that a server that does not start or stop fails the test
# instead of hanging the suite; no test asserts how long anything took.
START_BOUND_SECONDS = 30.0
STOP_BOUND_SECONDS = 30.0


class Listening(logging.Handler):
    """Hears serve's "listening on" line and keeps the URL it names."""

    def __init__(self) -> None:
        super().__init__()
        self.url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("listening on ") and not self.url.done():
            self.url.set_result(message.removeprefix("listening on ").removesuffix("/graphql"))


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """The base URL of `serve(app)` on a free port, and its task.

    Leaving the block sends SIGTERM (unless the test stopped it already) and waits for
    the server to stop.
    """
    listening = Listening()
    logging.getLogger("ghvault.server").addHandler(listening)
    task = asyncio.create_task(serve(app, host="127.0.0.1", port=0))
    try:
        started: set[asyncio.Future[Any]] = {listening.url, task}
        done, _ = await asyncio.wait(
            started, timeout=START_BOUND_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # start-up failed: its exception
        assert listening.url.done(), "serve did not start listening"
        yield listening.url.result(), task
    finally:
        logging.getLogger("ghvault.server").removeHandler(listening)
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a clean stop
        await asyncio.wait_for(task, STOP_BOUND_SECONDS)


def app_on(database_url: str, **env: str) -> web.Application:
    """ghvault as `serve` would run it with `env` added to the test environment."""
    return create_app(Settings.from_env(base_env(DATABASE_URL=database_url, **env)))
