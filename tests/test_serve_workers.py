"""`ghvault serve --workers N`: several processes answer on one port, still refresh once,
and report their metrics together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.domain.enums import Role
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import ALICE, Database, base_env, bearer, github_env, migrate
from tests.http.test_metrics import Scrape
from tests.test_cli import clean_env, ghvault

GHVAULT = Path(sys.executable).parent / "ghvault"
START_UP_SECONDS = 60.0
CHECKOUTS = 24
# Enough that each worker answers some of them (the kernel spreads connections by a hash
# of their addresses: all of 20 on one worker is a one-in-half-a-million chance).
OPERATIONS = 20
SCRAPES = 20
OPERATION_COUNT = "ghvault_graphql_operation_duration_seconds_count"

CHECKOUT = """
mutation Checkout($userId: ID!) {
  checkoutGithubToken(userId: $userId) {
    __typename
    ... on CheckoutSuccess { accessToken refreshed }
    ... on OperationError { code message }
  }
}
"""
STORE = """
mutation Store($input: StoreGithubTokenInput!) {
  storeGithubToken(input: $input) { __typename ... on OperationError { code message } }
}
"""
VIEWER = "{ viewer { id } }"


@dataclass
class Workers:
    base: str  # the URL both answer on
    pids: list[int]
    lines: list[str]  # the log, as it comes
    process: asyncio.subprocess.Process  # the parent


@contextlib.asynccontextmanager
async def two_workers(
    tmp_path: Path, fake: FakeGitHub, database_url: str | None = None, **extra_env: str
) -> AsyncIterator[Workers]:
    """`ghvault serve --workers 2` on `database_url` (by default a new, migrated SQLite
    file), with `extra_env`."""
    if database_url is None:
        database_url = f"sqlite:///{tmp_path}/ghvault.sqlite"
        await asyncio.to_thread(migrate, database_url)
    env = {
        "PATH": "/usr/bin:/bin",
        **base_env(DATABASE_URL=database_url, HOST="127.0.0.1", PORT="0", **github_env(fake)),
        **extra_env,
    }
    process = await asyncio.create_subprocess_exec(
        str(GHVAULT),
        "serve",
        "--workers",
        "2",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    listening: list[dict[str, Any]] = []

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode().strip()
            lines.append(line)
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("message", "").startswith("listening on"):
                    listening.append(record)

    reader = asyncio.create_task(read())
    try:
        deadline = time.monotonic() + START_UP_SECONDS
        while len(listening) < 2:
            assert process.returncode is None, "\n".join(lines)
            assert time.monotonic() < deadline, "\n".join(lines)
            await asyncio.sleep(0.1)
        addresses = {record["address"] for record in listening}
        assert len(addresses) == 1, addresses  # both on the one port
        pids = sorted({record["pid"] for record in listening})
        assert len(pids) == 2
        yield Workers(f"http://{addresses.pop()}", pids, lines, process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader


def access_pids(lines: list[str], path: str) -> set[int]:
    pids = set()
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("logger") == "aiohttp.access" and record.get("path") == path:
                pids.add(record["pid"])
    return pids


async def post(base: str, query: str, variables: dict[str, Any], auth: str) -> dict[str, Any]:
    # A connection per request, so that the kernel spreads them over the workers.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.post(
            f"{base}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": auth},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def scrape(base: str) -> Scrape:
    """/metrics from whichever worker the kernel picks for a new connection."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(f"{base}/metrics") as response,
    ):
        assert response.status == 200, await response.text()
        return Scrape(await response.text())


def assert_both_answered(workers: Workers, path: str) -> None:
    if access_pids(workers.lines, path) != set(workers.pids):
        pytest.fail(f"one worker answered every {path}:\n" + "\n".join(workers.lines[-20:]))


async def test_two_workers_answer_and_refresh_each_credential_version_once(
    tmp_path: Path, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure both processes serve requests, and simultaneous checkouts of a token due
    for refresh, spread over both, reach GitHub once and all hand out the new token, on
    either engine (SQLite's write lock, PostgreSQL's row lock)."""
    access, refresh = fake_github.seed_token(STANDARD_APP.client_id, 4242, "octocat")
    now = datetime.now(UTC)
    service = bearer("commit-worker", Role.SERVICE)
    async with two_workers(tmp_path, fake_github, database.url) as workers:
        base, lines = workers.base, workers.lines
        stored = await post(
            base,
            STORE,
            {
                "input": {
                    "userId": "alice",
                    "appType": "STANDARD",
                    "githubUserId": "4242",
                    "githubLogin": "octocat",
                    "accessToken": access,
                    "accessTokenExpiresAt": (now + timedelta(minutes=1)).isoformat(),
                    "refreshToken": refresh,
                    "refreshTokenExpiresAt": (now + timedelta(days=180)).isoformat(),
                }
            },
            service,
        )
        assert stored["data"]["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"

        results = await asyncio.gather(
            *(post(base, CHECKOUT, {"userId": "alice"}, service) for _ in range(CHECKOUTS))
        )

    outcomes = [result["data"]["checkoutGithubToken"] for result in results]
    assert {outcome["__typename"] for outcome in outcomes} == {"CheckoutSuccess"}
    handed_out = {outcome["accessToken"] for outcome in outcomes}
    assert len(handed_out) == 1
    assert handed_out != {access}
    assert sum(outcome["refreshed"] for outcome in outcomes) == 1
    assert fake_github.calls["refresh"] == 1
    if len(access_pids(lines, "/graphql")) < 2:
        pytest.fail("one worker answered every request:\n" + "\n".join(lines[-20:]))


async def test_workers_report_their_sum_from_a_directory_of_their_own(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    """Make sure `serve --workers 2` without PROMETHEUS_MULTIPROC_DIR counts every
    operation in whichever worker answers a scrape, through a private directory that is
    gone once the command stops."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    async with two_workers(tmp_path, fake_github, TMPDIR=str(temporary)) as workers:
        (shared,) = temporary.iterdir()
        assert shared.name.startswith("ghvault-metrics-")
        assert stat.S_IMODE(shared.stat().st_mode) == 0o700
        for _ in range(OPERATIONS):
            await post(workers.base, VIEWER, {}, ALICE)
        scrapes = [await scrape(workers.base) for _ in range(SCRAPES)]

    counts = [
        metrics.value(OPERATION_COUNT, operation="viewer", outcome="ok") for metrics in scrapes
    ]
    assert counts == [OPERATIONS] * SCRAPES
    assert list(temporary.iterdir()) == []
    assert_both_answered(workers, "/graphql")
    assert_both_answered(workers, "/metrics")


STALE_OPERATION = """
from prometheus_client import Histogram

Histogram("ghvault_graphql_operation_duration_seconds", "", ["operation", "outcome"]).labels(
    "viewer", "ok"
).observe(0.1)
"""


async def test_workers_leave_out_the_numbers_of_an_earlier_run(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    """Make sure an operator's PROMETHEUS_MULTIPROC_DIR loses the metrics files of earlier
    processes when `serve --workers 2` starts, and keeps everything else in it."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    command = [sys.executable, "-c", STALE_OPERATION]
    await asyncio.to_thread(subprocess.run, command, env=environment, check=True)
    (stale,) = shared.glob("histogram_*.db")
    (shared / "README.txt").write_text("metrics of the ghvault workers\n")

    async with two_workers(tmp_path, fake_github, PROMETHEUS_MULTIPROC_DIR=str(shared)) as workers:
        assert not stale.exists()
        await post(workers.base, VIEWER, {}, ALICE)
        metrics = await scrape(workers.base)

    assert metrics.value(OPERATION_COUNT, operation="viewer", outcome="ok") == 1
    assert (shared / "README.txt").read_text() == "metrics of the ghvault workers\n"


def test_workers_refuse_a_metrics_directory_holding_another_db_file(tmp_path: Path) -> None:
    """Make sure `serve --workers 2` neither deletes nor reads as metrics a *.db file that
    prometheus-client did not write (an operator's database, say): it stops with one
    line, having removed nothing."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "ghvault.db").write_bytes(b"an operator's database")
    (shared / "counter_4242.db").write_bytes(b"")
    env = clean_env(
        **base_env(
            DATABASE_URL=f"sqlite:///{tmp_path}/ghvault.sqlite",
            PORT="0",
            PROMETHEUS_MULTIPROC_DIR=str(shared),
        )
    )

    result = ghvault("serve", "--workers", "2", cwd=tmp_path, env=env)

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "ghvault: configuration error: PROMETHEUS_MULTIPROC_DIR holds 'ghvault.db', which is "
        "not a metrics file: give the metrics a directory of their own"
    ]
    assert sorted(path.name for path in shared.iterdir()) == ["counter_4242.db", "ghvault.db"]


async def test_a_dead_workers_live_gauges_stop_counting(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    """Make sure the parent forgets each worker's live gauge (connections in use) once the
    worker has exited, even one killed without a chance to clean up, while its counters
    stay (totals never go backwards)."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    async with two_workers(tmp_path, fake_github, PROMETHEUS_MULTIPROC_DIR=str(shared)) as workers:
        gauges = {f"gauge_livesum_{pid}.db" for pid in workers.pids}
        assert gauges <= {path.name for path in shared.iterdir()}
        os.kill(workers.pids[0], signal.SIGKILL)
        # The parent stops the other worker and exits, failed, for systemd to restart it.
        assert await asyncio.wait_for(workers.process.wait(), timeout=30) == 1

    left = {path.name for path in shared.iterdir()}
    assert not gauges & left
    assert {f"counter_{pid}.db" for pid in workers.pids} <= left
