"""Leases across processes: what one `ghvault serve` promised, no other process breaks.

Two server processes share the database (either engine), each with its own
sweeper; the fake GitHub kills the old tokens on every refresh and notes
when. The tokens live 5.5 minutes and their refresh tokens lapse within the
sweep's window, so every checkout that finds no window open refreshes, and
so does every sweep: nothing but the windows keeps the tokens handed out
alive.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from server.storage.tables import UserGithubAppToken as Token
from tests.domain.test_checkout import server_process
from tests.domain.test_sweep import refresh_due_process
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    PATIENT_GITHUB_TIMEOUT_SECONDS,
    SERVICE,
    STORE,
    Database,
    base_env,
    github_env,
    store_input,
)
from tests.test_cli import free_port

CHECKOUT = """
mutation Checkout($lease: Int!) {
  checkoutGithubToken(userId: "alice", leaseSeconds: $lease) {
    __typename
    ... on CheckoutSuccess { accessToken refreshed usableUntil }
    ... on OperationError { code }
  }
}
"""
TOKEN_LIFETIME = timedelta(minutes=5, seconds=30)
# Inside the sweep's 30-day window: every sweep wants to refresh every token.
REFRESH_LIFETIME = timedelta(days=10)
SWEEP_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class Handed:
    """A checkout that succeeded, and when the worker asked and heard back."""

    token: str
    usable_until: datetime
    lease: timedelta
    refreshed: bool
    sent_at: datetime
    received_at: datetime


@dataclass
class Servers:
    bases: list[str]
    session: aiohttp.ClientSession
    env: dict[str, str]

    async def checkout(self, base: str, lease_seconds: int) -> Handed | str:
        """A checkout at `base`: what was handed out, or the refusal's code."""
        sent_at = datetime.now(UTC)
        body = {"query": CHECKOUT, "variables": {"lease": lease_seconds}}
        async with self.session.post(f"{base}/graphql", json=body) as response:
            result = (await response.json())["data"]["checkoutGithubToken"]
        received_at = datetime.now(UTC)
        if result["__typename"] != "CheckoutSuccess":
            return str(result["code"])
        return Handed(
            token=result["accessToken"],
            usable_until=datetime.fromisoformat(result["usableUntil"]),
            lease=timedelta(seconds=lease_seconds),
            refreshed=result["refreshed"],
            sent_at=sent_at,
            received_at=received_at,
        )


@asynccontextmanager
async def two_servers(database: Database, fake: FakeGitHub) -> AsyncIterator[Servers]:
    """Two `ghvault serve` processes with sweepers, and alice's token stored through one."""
    fake.access_token_expires_in = int(TOKEN_LIFETIME.total_seconds())
    fake.refresh_token_expires_in = int(REFRESH_LIFETIME.total_seconds())
    env = base_env(
        DATABASE_URL=database.url,
        REFRESH_SWEEP_INTERVAL_SECONDS=str(SWEEP_INTERVAL_SECONDS),
        # A refresh must not time out on a busy machine: GitHub would have spent the
        # refresh token without the row learning the new one.
        **{**github_env(fake), "GITHUB_TIMEOUT_SECONDS": str(PATIENT_GITHUB_TIMEOUT_SECONDS)},
    )
    async with AsyncExitStack() as stack:
        bases = [
            await stack.enter_async_context(server_process(env, free_port())) for _ in range(2)
        ]
        session = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"Authorization": SERVICE})
        )
        now = datetime.now(UTC)
        access, refresh = fake.seed_token(STANDARD_APP.client_id, 583231, "octocat")
        variables = store_input("alice", now=now, access=access, refresh=refresh)
        variables["input"]["accessTokenExpiresAt"] = (now + TOKEN_LIFETIME).isoformat()
        variables["input"]["refreshTokenExpiresAt"] = (now + REFRESH_LIFETIME).isoformat()
        async with session.post(
            f"{bases[0]}/graphql", json={"query": STORE, "variables": variables}
        ) as response:
            stored = await response.json()
        assert stored["data"]["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
        yield Servers(bases, session, env)


def assert_no_window_broken(fake: FakeGitHub, handed: list[Handed]) -> None:
    """GitHub killed no token before the usableUntil it was handed out with."""
    broken = [
        item
        for item in handed
        if (killed := fake.killed_at(item.token)) is not None and killed < item.usable_until
    ]
    assert broken == [], f"{len(broken)} of {len(handed)} windows broken"


def assert_full_window(item: Handed) -> None:
    """usableUntil is the server's now + the lease, for a now between asking and hearing."""
    assert item.sent_at <= item.usable_until - item.lease <= item.received_at


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.05)


def sweep_summary(stderr: str) -> str:
    return str(json.loads(stderr.strip().splitlines()[-1])["message"])


async def test_a_window_held_through_one_process_holds_in_the_other(
    database: Database, fake_github: FakeGitHub
) -> None:
    """Make sure a token one process handed out is handed out again, not refreshed, by the
    other process, by both processes' sweepers and by `refresh-due --within 400`, for as
    long as its window lasts. (What comes after a window: the next test.)"""
    async with two_servers(database, fake_github) as servers:
        first, second = servers.bases
        held = await servers.checkout(first, 30)
        again = await servers.checkout(second, 2)
        code, _, stderr = await refresh_due_process(servers.env, "--within", "400")
        await asyncio.sleep(2 * SWEEP_INTERVAL_SECONDS)
        refreshes_while_held = fake_github.calls["refresh"]
        assert isinstance(held, Handed)
        alive_while_held = fake_github.is_access_token_valid(held.token)
        # A machine too slow for the window to cover the checks would prove nothing.
        assert datetime.now(UTC) < held.usable_until

    assert isinstance(again, Handed)
    assert (held.refreshed, again.refreshed) == (True, False)
    assert again.token == held.token
    assert code == 0, stderr
    assert sweep_summary(stderr).startswith("sweep: 0 due, 0 refreshed")
    assert (refreshes_while_held, alive_while_held) == (1, True)
    assert_full_window(held)
    assert_no_window_broken(fake_github, [held, again])


ROUNDS = 3
BUSY_SECONDS = 1.5
WORKERS = 3


async def test_busy_workers_on_short_lived_tokens_never_see_a_promise_broken(
    database: Database, fake_github: FakeGitHub
) -> None:
    """Three workers check out tokens that live 5.5 minutes from either of two processes,
    for windows of one or two seconds, and call GitHub with them at random moments inside
    the window, while both processes sweep every second and `refresh-due --within 400`
    runs as well. Between rounds nobody holds the token. Make sure GitHub never refused a
    token inside its usableUntil, no refresh token was presented twice, each round handed
    out tokens refreshed since the round before, every window was the one asked for, and
    checkouts kept succeeding."""
    handed: list[Handed] = []
    refusals: list[str] = []
    rejected_inside: list[datetime] = []
    rng = random.Random(17)
    fake_github.repos.add("octo", "hello")

    async with two_servers(database, fake_github) as servers:

        async def call_github(item: Handed) -> None:
            headers = {"Authorization": f"Bearer {item.token}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                url = f"{fake_github.base_url}/repos/octo/hello"
                async with session.get(url) as response:
                    answered_at = datetime.now(UTC)
                    if response.status == 401 and answered_at <= item.usable_until:
                        rejected_inside.append(answered_at)

        async def work(end: float) -> None:
            loop = asyncio.get_running_loop()
            while loop.time() < end:
                outcome = await servers.checkout(rng.choice(servers.bases), rng.choice((1, 2)))
                if isinstance(outcome, str):
                    refusals.append(outcome)
                    continue
                handed.append(outcome)
                for _ in range(2):
                    left = (outcome.usable_until - datetime.now(UTC)).total_seconds() - 0.2
                    if left <= 0:
                        break
                    await asyncio.sleep(rng.uniform(0, left / 2))
                    await call_github(outcome)
                await asyncio.sleep(rng.uniform(0, 0.3))

        rounds: list[list[Handed]] = []
        for number in range(ROUNDS):
            started = len(handed)
            end = asyncio.get_running_loop().time() + BUSY_SECONDS
            workers = asyncio.gather(*(work(end) for _ in range(WORKERS)))
            if number == 1:
                code, _, stderr = await refresh_due_process(servers.env, "--within", "400")
                assert code == 0, stderr
            await workers
            rounds.append(handed[started:])
            await sleep_until(max(item.usable_until for item in handed))

    row = await Token.select(Token.revoked_at, Token.credential_version).first()
    assert rejected_inside == []
    assert_no_window_broken(fake_github, handed)
    assert fake_github.refused["bad_refresh_token"] == 0
    assert row is not None
    assert row["revoked_at"] is None
    assert row["credential_version"] == 1 + fake_github.calls["refresh"]
    assert all(rounds), "a round without a checkout"
    for earlier, later in itertools.pairwise(rounds):
        # Nobody held the token between them: it was refreshed before the next was handed out.
        assert not {item.token for item in earlier} & {item.token for item in later}
    for item in handed:
        assert_full_window(item)
    assert len(refusals) * 10 <= len(handed) + len(refusals), refusals
