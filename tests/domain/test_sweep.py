"""The sweep: due tokens refreshed ahead of need, each credential version exactly once."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server.config import Settings
from server.domain.enums import AppType
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.domain.sweep import SweepReport, count_due, due_condition, is_due, sweep
from server.http.app import create_app
from server.storage.tables import AuditEvent, User
from server.storage.tables import UserGithubAppToken as Token
from tests.fake_github import FakeGitHub
from tests.helpers import PATIENT_GITHUB_TIMEOUT_SECONDS, T0, Database, base_env, github_env
from tests.seeding import seed_tokens

NOW = T0
DUE_SOON = (timedelta(hours=8), timedelta(days=10))  # refresh token lapses within 30 days
ACCESS_EXPIRED = (-timedelta(hours=1), timedelta(days=150))  # access token already expired
IDLE = (timedelta(hours=8), timedelta(days=150))  # nothing to do


async def _sweep(settings: Settings, github: dict[AppType, GitHubAccess], **kwargs: Any):
    return await sweep(
        now=NOW,
        keyring=settings.keyring,
        github_for=github,
        locks=kwargs.pop("locks", None) or KeyedLocks(),
        jitter_seconds=kwargs.pop("jitter_seconds", 0),
        **kwargs,
    )


async def _seed_thousand(settings: Settings, fake: FakeGitHub) -> None:
    """1,000 tokens: 100 due (half by the refresh window, half by an expired access token)."""
    await seed_tokens(
        settings.keyring,
        now=NOW,
        count=100,
        expiries=[DUE_SOON, ACCESS_EXPIRED],
        fake=fake,
        prefix="due",
        first_github_id=100_000,
    )
    await seed_tokens(
        settings.keyring,
        now=NOW,
        count=900,
        expiries=[IDLE],
        prefix="idle",
        first_github_id=200_000,
    )


async def _versions() -> dict[str, int]:
    rows = await Token.select(Token.user_id, Token.credential_version)
    return {row["user_id"]: row["credential_version"] for row in rows}


async def _sweep_audit() -> list[dict[str, Any]]:
    rows = await AuditEvent.select(AuditEvent.action, AuditEvent.subject_user_id, AuditEvent.detail)
    return [row for row in rows if row["detail"] and '"sweep"' in row["detail"]]


async def test_two_sweepers_started_together_refresh_each_due_token_once(
    database: Database,
    settings: Settings,
    fake_github: FakeGitHub,
    github: dict[AppType, GitHubAccess],
) -> None:
    """1,000 tokens, 100 due, two sweepers with their own locks: 100 refreshes in all."""
    await _seed_thousand(settings, fake_github)
    assert await count_due(NOW) == 100

    first, second = await asyncio.gather(
        _sweep(settings, github, jitter_seconds=0.01),
        _sweep(settings, github, jitter_seconds=0.01),
    )

    assert fake_github.calls["refresh"] == 100
    assert first.refreshed + second.refreshed == 100
    assert first.failed == second.failed == first.revoked == second.revoked == 0
    versions = await _versions()
    assert {user for user, version in versions.items() if version == 2} == {
        f"due{index:05}" for index in range(100)
    }
    assert set(versions.values()) == {1, 2}
    refreshed = await _sweep_audit()
    assert len(refreshed) == 100
    assert {row["action"] for row in refreshed} == {"token_refreshed"}
    assert await count_due(NOW) == 0


async def test_a_refreshed_token_works_at_github_and_is_not_due_again(
    database: Database,
    settings: Settings,
    fake_github: FakeGitHub,
    github: dict[AppType, GitHubAccess],
) -> None:
    """The sweep stores GitHub's new pair; the old refresh token is spent."""
    (seeded,) = await seed_tokens(
        settings.keyring, now=NOW, count=1, expiries=[DUE_SOON], fake=fake_github
    )

    report = await _sweep(settings, github)

    assert (report.due, report.refreshed) == (1, 1)
    assert not fake_github.is_refresh_token_valid(seeded.refresh_token)
    (row,) = await Token.select()
    assert row["refresh_token_expires_at"] > NOW + timedelta(days=150)
    assert row["last_refreshed_at"] == NOW
    assert (await _sweep(settings, github)).due == 0
    assert fake_github.calls["refresh"] == 1


async def test_bad_refresh_token_revokes_with_refresh_failed(
    database: Database,
    settings: Settings,
    fake_github: FakeGitHub,
    github: dict[AppType, GitHubAccess],
) -> None:
    """GitHub's bad_refresh_token during a sweep revokes the row, like a checkout would."""
    await seed_tokens(settings.keyring, now=NOW, count=1, expiries=[ACCESS_EXPIRED])

    report = await _sweep(settings, github)

    assert (report.due, report.revoked, report.refreshed) == (1, 1, 0)
    (row,) = await Token.select()
    assert row["revocation_reason"] == "refresh_failed"
    assert row["revoked_at"] == NOW
    assert (row["access_token_encrypted"], row["refresh_token_encrypted"]) == (None, None)
    (event,) = await _sweep_audit()
    assert event["action"] == "token_refresh_failed"
    assert json.loads(event["detail"])["reason"] == "bad_refresh_token"
    assert (await _sweep(settings, github)).due == 0


async def test_a_5xx_leaves_rows_unchanged_and_the_next_sweep_retries(
    database: Database,
    settings: Settings,
    fake_github: FakeGitHub,
    github: dict[AppType, GitHubAccess],
) -> None:
    """GitHub answering 502: every due row byte-for-byte as it was, refreshed next time."""
    await seed_tokens(
        settings.keyring, now=NOW, count=5, expiries=[DUE_SOON, ACCESS_EXPIRED], fake=fake_github
    )
    before = await database.fetch("SELECT * FROM user_github_app_tokens ORDER BY user_id")
    fake_github.fail_with_status = 502

    failed = await _sweep(settings, github)

    assert (failed.due, failed.failed, failed.refreshed) == (5, 5, 0)
    assert await database.fetch("SELECT * FROM user_github_app_tokens ORDER BY user_id") == before
    fake_github.fail_with_status = None
    retried = await _sweep(settings, github)
    assert (retried.due, retried.refreshed) == (5, 5)
    assert set((await _versions()).values()) == {2}


async def test_limit_and_window_choose_what_is_swept(
    database: Database,
    settings: Settings,
    fake_github: FakeGitHub,
    github: dict[AppType, GitHubAccess],
) -> None:
    """`limit` bounds one run; a wider window takes in tokens lapsing later."""
    await seed_tokens(settings.keyring, now=NOW, count=4, expiries=[DUE_SOON], fake=fake_github)
    await seed_tokens(
        settings.keyring,
        now=NOW,
        count=2,
        expiries=[(timedelta(hours=8), timedelta(days=45))],
        fake=fake_github,
        prefix="later",
        first_github_id=900_000,
    )

    limited = await _sweep(settings, github, limit=3)
    rest = await _sweep(settings, github)
    wide = await _sweep(settings, github, within=timedelta(days=60))

    assert (limited.due, limited.refreshed) == (3, 3)
    assert (rest.due, rest.refreshed) == (1, 1)
    assert (wide.due, wide.refreshed) == (2, 2)


async def test_due_sql_and_python_agree(database: Database, settings: Settings) -> None:
    """The SQL a sweep selects with and the check it repeats under the row lock agree."""
    offsets = [
        None,
        -timedelta(days=1),
        timedelta(minutes=1),
        timedelta(days=20),
        timedelta(days=90),
    ]
    combos = list(itertools.product(offsets, offsets, [True, False], [True, False]))
    rows = []
    for index, (access_in, refresh_in, has_refresh, revoked) in enumerate(combos):
        rows.append(
            Token(
                user_id=f"u{index}",
                github_app_type="standard",
                github_user_id=str(index),
                github_login=f"l{index}",
                access_token_encrypted="x",
                access_token_expires_at=NOW + access_in if access_in is not None else None,
                refresh_token_encrypted="y" if has_refresh else None,
                refresh_token_expires_at=NOW + refresh_in if refresh_in is not None else None,
                revoked_at=NOW if revoked else None,
            )
        )
    await User.insert(*(User(id=f"u{index}") for index in range(len(rows))))
    await Token.insert(*rows)
    window = timedelta(days=30)

    in_sql = {row["user_id"] for row in await Token.select().where(due_condition(NOW, window))}
    in_python = {row["user_id"] for row in await Token.select() if is_due(row, NOW, window)}

    assert in_sql == in_python
    assert 0 < len(in_sql) < len(rows)


async def test_the_in_process_sweeper_refreshes_in_the_background(
    database: Database,
    settings: Settings,
    fake_github: FakeGitHub,
    aiohttp_client: Any,
) -> None:
    """With REFRESH_SWEEP_INTERVAL_SECONDS set, a running server sweeps by itself."""
    await seed_tokens(settings.keyring, now=NOW, count=2, expiries=[DUE_SOON], fake=fake_github)
    app = create_app(
        replace(settings, refresh_sweep_interval_seconds=0.05),
        clock=lambda: NOW,
        engine=database.engine,
    )
    client = await aiohttp_client(app)

    counted = 'ghvault_sweep_tokens_total{outcome="refreshed"} 2.0'
    async with asyncio.timeout(30):
        while counted not in await (await client.get("/metrics")).text():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    # Shut the server (and its sweeper) down while the database and GitHub are still up.
    await client.close()
    assert fake_github.calls["refresh"] == 2
    assert set((await _versions()).values()) == {2}


async def refresh_due_process(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`ghvault refresh-due *args`: its exit code, stdout and stderr."""
    ghvault = Path(sys.executable).parent / "ghvault"
    process = await asyncio.create_subprocess_exec(
        str(ghvault),
        "refresh-due",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_two_refresh_due_processes_refresh_each_due_token_once(
    database: Database, settings: Settings, fake_github: FakeGitHub
) -> None:
    """`ghvault refresh-due` twice at once, as two hosts' schedulers would: 100 refreshes."""
    now = datetime.now(UTC)
    await seed_tokens(
        settings.keyring, now=now, count=100, expiries=[DUE_SOON, ACCESS_EXPIRED], fake=fake_github
    )
    await seed_tokens(
        settings.keyring,
        now=now,
        count=900,
        expiries=[IDLE],
        prefix="idle",
        first_github_id=300_000,
    )
    env = base_env(
        DATABASE_URL=database.url,
        **{
            **github_env(fake_github),
            "GITHUB_TIMEOUT_SECONDS": str(PATIENT_GITHUB_TIMEOUT_SECONDS),
        },
    )

    results = await asyncio.gather(refresh_due_process(env), refresh_due_process(env))

    assert [code for code, _, _ in results] == [0, 0], results
    assert fake_github.calls["refresh"] == 100
    summaries = [json.loads(stderr.strip().splitlines()[-1]) for _, _, stderr in results]
    assert all(line["message"].startswith("sweep: ") for line in summaries)
    refreshed = sum(int(line["message"].split(", ")[1].split()[0]) for line in summaries)
    assert refreshed == 100
    assert sorted(set((await _versions()).values())) == [1, 2]
    assert sum(version == 2 for version in (await _versions()).values()) == 100


def test_a_report_summary_names_every_outcome() -> None:
    report = SweepReport(due=5, refreshed=1, revoked=1, failed=1, unreadable=1, skipped=1)
    assert report.done == 5
    assert report.summary().startswith(
        "sweep: 5 due, 1 refreshed, 1 revoked, 1 failed, 1 unreadable, 1 skipped"
    )
