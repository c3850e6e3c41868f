"""`ghvault serve` as operators run it: flags, and start-up failures as one line."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from server.config import Settings
from server.http.app import create_app
from server.http.server import serve
from server.storage.migration_state import MIGRATIONS_FOLDER
from tests.helpers import base_env, migrate
from tests.test_cli import (
    GHVAULT,
    START_UP_BOUND_SECONDS,
    clean_env,
    free_port,
    ghvault,
    graphql,
    stop,
    wait_until_healthy,
)
from tests.ws_client import connect


def is_json_line(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def assert_refused_with_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 1, nothing served, and one plain line (besides JSON logs) that says why."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    plain = [line for line in result.stderr.splitlines() if not is_json_line(line)]
    assert len(plain) == 1, result.stderr
    assert plain[0].startswith("ghvault: ")
    for text in expected:
        assert text in plain[0]
    assert "listening on" not in result.stderr
    return plain[0]


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return clean_env(
        **base_env(DATABASE_URL=f"sqlite:///{tmp_path}/data/ghvault.sqlite", PORT=str(free_port()))
    )


def migrated(env: dict[str, str], cwd: Path) -> dict[str, str]:
    result = ghvault("migrate", "--create", cwd=cwd, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return env


# --- start-up failures ---------------------------------------------------------

# Every migration ghvault ships; a new one must not break the messages below.
MIGRATIONS = len(list(MIGRATIONS_FOLDER.glob("ghvault_*.py")))


def test_serve_refuses_a_database_that_was_never_migrated(
    tmp_path: Path, sqlite_env: dict[str, str]
) -> None:
    """Make sure `serve` on an empty database says to run `ghvault migrate`, and stops."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ghvault.sqlite").touch()
    result = ghvault("serve", cwd=tmp_path, env=sqlite_env)
    assert_refused_with_one_line(
        result, "ghvault migrate --create", f"lacks {MIGRATIONS} of {MIGRATIONS} migrations"
    )


def test_serve_refuses_a_sqlite_file_that_does_not_exist(
    tmp_path: Path, sqlite_env: dict[str, str]
) -> None:
    """Make sure a mistyped path is not served as a new, empty vault: nothing is created."""
    result = ghvault("serve", cwd=tmp_path, env=sqlite_env)
    assert_refused_with_one_line(
        result, f"there is no database at {tmp_path}/data/ghvault.sqlite", "--create"
    )
    assert list(tmp_path.iterdir()) == []


def test_serve_refuses_a_database_missing_a_migration(
    tmp_path: Path, sqlite_env: dict[str, str]
) -> None:
    """Make sure a database that missed the latest migration is refused, naming the fix."""
    migrated(sqlite_env, tmp_path)
    with closing(sqlite3.connect(tmp_path / "data" / "ghvault.sqlite")) as connection:
        connection.execute("DELETE FROM migration WHERE name = (SELECT max(name) FROM migration)")
        connection.commit()
    result = ghvault("serve", cwd=tmp_path, env=sqlite_env)
    assert_refused_with_one_line(result, "ghvault migrate", f"lacks 1 of {MIGRATIONS} migrations")


def test_serve_refuses_a_database_migrated_by_a_newer_release(
    tmp_path: Path, sqlite_env: dict[str, str]
) -> None:
    """Make sure a migration this release does not know stops start-up, naming it."""
    migrated(sqlite_env, tmp_path)
    with closing(sqlite3.connect(tmp_path / "data" / "ghvault.sqlite")) as connection:
        connection.execute(
            "INSERT INTO migration (name, app_name, ran_on) "
            "VALUES ('2099-01-01T00:00:00:000000', 'ghvault', '2099-01-01 00:00:00')"
        )
        connection.commit()
    result = ghvault("serve", cwd=tmp_path, env=sqlite_env)
    assert_refused_with_one_line(result, "2099-01-01T00:00:00:000000", "does not know")


def test_serve_refuses_a_port_in_use(tmp_path: Path, sqlite_env: dict[str, str]) -> None:
    """Make sure a taken port is one line naming the address, not a traceback."""
    migrated(sqlite_env, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ghvault("serve", "--port", str(port), cwd=tmp_path, env=sqlite_env)
    assert_refused_with_one_line(result, f"127.0.0.1:{port}", "address already in use")


def test_serve_refuses_a_host_it_cannot_resolve(tmp_path: Path, sqlite_env: dict[str, str]) -> None:
    """Make sure an unknown --host is one line saying so, not a traceback."""
    migrated(sqlite_env, tmp_path)
    host = "no-such-host.invalid"
    result = ghvault("serve", "--host", host, cwd=tmp_path, env=sqlite_env)
    line = assert_refused_with_one_line(result, f"cannot listen on {host}:{sqlite_env['PORT']}")
    assert "unknown error" not in line.lower()


def test_serve_refuses_an_unreachable_postgres_without_echoing_the_password(
    tmp_path: Path,
) -> None:
    """Make sure a PostgreSQL nobody answers at is one line and a quick exit; no password."""
    url = f"postgres://ghvault:hunter2@127.0.0.1:{free_port()}/ghvault"
    env = clean_env(**base_env(DATABASE_URL=url, PORT=str(free_port())))
    result = ghvault("serve", cwd=tmp_path, env=env)
    line = assert_refused_with_one_line(result, "cannot reach the database of DATABASE_URL")
    assert "hunter2" not in result.stderr
    assert "ConnectionRefusedError" in line


def test_serve_refuses_an_sqlite_path_it_cannot_open(tmp_path: Path) -> None:
    """Make sure a DATABASE_URL below a plain file is one line, not a traceback."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = clean_env(
        **base_env(DATABASE_URL=f"sqlite:///{blocker}/ghvault.sqlite", PORT=str(free_port()))
    )
    result = ghvault("serve", cwd=tmp_path, env=env)
    assert_refused_with_one_line(result, f"there is no database at {blocker}/ghvault.sqlite")


# --- flags ---------------------------------------------------------------------


async def test_host_and_port_flags_override_the_environment(
    tmp_path: Path, sqlite_env: dict[str, str]
) -> None:
    """Make sure --host/--port win over HOST/PORT, and listening/stopped are JSON log lines."""
    env = migrated({**sqlite_env, "HOST": "0.0.0.0"}, tmp_path)  # noqa: S104 -- never bound
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(GHVAULT),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = asyncio.create_task(process.stderr.read())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        try:
            await wait_until_healthy(http, base, process, started + START_UP_BOUND_SECONDS)
            body = await graphql(http, base, "{ viewer { id } }")
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        finally:
            await stop(process)
    assert process.returncode == 0
    lines = [json.loads(line) for line in (await stderr).decode().splitlines()]
    listening = [line for line in lines if line["message"].startswith("listening on")]
    assert [line["message"] for line in listening] == [f"listening on {base}/graphql"]
    assert listening[0]["logger"] == "ghvault.server"
    assert f":{env['PORT']}/" not in listening[0]["message"]
    assert lines[-1]["message"] == "stopped"
    assert lines[-1]["level"] == "INFO"


async def test_objects_made_at_start_up_are_left_out_of_garbage_collection(
    tmp_path: Path,
) -> None:
    """Make sure a full collection while serving walks only what requests made (a frozen
    start-up), and that the server still stops cleanly."""
    database_url = f"sqlite:///{tmp_path}/ghvault.sqlite"
    await asyncio.to_thread(migrate, database_url)
    listening = asyncio.Event()

    class Listening(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("listening on"):
                listening.set()

    handler = Listening()
    logging.getLogger("ghvault").addHandler(handler)
    gc.unfreeze()
    try:
        app = create_app(Settings.from_env(base_env(DATABASE_URL=database_url)))
        serving = asyncio.create_task(serve(app, host="127.0.0.1", port=0))
        await asyncio.wait_for(listening.wait(), START_UP_BOUND_SECONDS)
        frozen = gc.get_freeze_count()
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a clean stop
        await asyncio.wait_for(serving, START_UP_BOUND_SECONDS)
    finally:
        logging.getLogger("ghvault").removeHandler(handler)
        gc.unfreeze()
    # The schema, the app and everything imported: tens of thousands of objects.
    assert frozen > 10_000


# --- stopping ------------------------------------------------------------------


async def test_sigterm_with_an_open_subscription_closes_it_and_exits(
    tmp_path: Path, sqlite_env: dict[str, str]
) -> None:
    """Make sure a stop during a deploy tells subscribers to reconnect (1001) and exits at once,
    rather than waiting for them to leave."""
    env = migrated(sqlite_env, tmp_path)
    token = ghvault("dev-token", "--sub", "alice", "--role", "user", cwd=tmp_path, env=env)
    base = f"http://127.0.0.1:{env['PORT']}"
    process = await asyncio.create_subprocess_exec(
        str(GHVAULT),
        "serve",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = asyncio.create_task(process.stderr.read())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            await wait_until_healthy(http, base, process, time.monotonic() + START_UP_BOUND_SECONDS)
            async with connect(http, f"{base}/graphql") as socket:
                assert (await socket.init(f"Bearer {token.stdout.strip()}"))["type"] == (
                    "connection_ack"
                )
                operation = await socket.subscribe("subscription { githubTokenChanged { state } }")
                await socket.next_payload(operation)
                process.send_signal(signal.SIGTERM)
                closed = await socket.closed()
            exit_code = await asyncio.wait_for(process.wait(), timeout=30)
        finally:
            await stop(process)
    lines = [json.loads(line) for line in (await stderr).decode().splitlines()]
    assert closed.code == 1001
    assert exit_code == 0
    assert lines[-1]["message"] == "stopped"
    assert not [line for line in lines if line["level"] == "ERROR" or "exception" in line]
