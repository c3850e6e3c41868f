"""`ghvault serve --workers N`: several processes answer on one port, and still refresh once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.domain.enums import Role
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import base_env, bearer, github_env, migrate

GHVAULT = Path(sys.executable).parent / "ghvault"
START_UP_SECONDS = 60.0
CHECKOUTS = 24

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


@contextlib.asynccontextmanager
async def two_workers(tmp_path: Path, fake: FakeGitHub) -> AsyncIterator[tuple[str, list[str]]]:
    """`ghvault serve --workers 2` on a migrated SQLite file; yields (base URL, its log lines)."""
    database_url = f"sqlite:///{tmp_path}/ghvault.sqlite"
    await asyncio.to_thread(migrate, database_url)
    env = {
        "PATH": "/usr/bin:/bin",
        **base_env(DATABASE_URL=database_url, HOST="127.0.0.1", PORT="0", **github_env(fake)),
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
        assert len({record["pid"] for record in listening}) == 2
        yield f"http://{addresses.pop()}", lines
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


async def test_two_workers_answer_and_refresh_each_credential_version_once(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    """Make sure both processes serve requests, and simultaneous checkouts of a token due
    for refresh, spread over both, reach GitHub once and all hand out the new token."""
    access, refresh = fake_github.seed_token(STANDARD_APP.client_id, 4242, "octocat")
    now = datetime.now(UTC)
    service = bearer("commit-worker", Role.SERVICE)
    async with two_workers(tmp_path, fake_github) as (base, lines):
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
