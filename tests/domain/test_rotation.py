"""Key rotation: rewrap under the new key while the service keeps handing out tokens."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from server.auth import Principal
from server.crypto import Keyring, TokenSlot
from server.domain.checkout import CheckedOutToken, checkout_token
from server.domain.enums import AppType, AuditAction, Role
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.domain.rotation import RewrapReport, key_usage, rewrap
from server.github import GitHubApp, GitHubClient, new_client_session
from server.storage.tables import AuditEvent, User, UserGithubAppToken
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    ACTIVE_KEY,
    RETIRED_KEY,
    T0,
    Database,
    access_token,
    base_env,
    refresh_token,
)

KEY_A = ACTIVE_KEY
KEY_B = RETIRED_KEY
WORKER = Principal(id="commit-worker", role=Role.SERVICE)
ROWS = 1000
EXPIRING = 20  # of them near expiry, so checkouts refresh while rewrap runs


async def _store_under(
    keyring: Keyring, fake: FakeGitHub | None = None, rows: int = ROWS
) -> dict[str, str]:
    """`rows` users with tokens encrypted under `keyring`; returns user -> access token."""
    users, tokens, plaintexts = [], [], {}
    for index in range(rows):
        user_id = f"user{index:04}"
        github_id = str(100_000 + index)
        expiring = fake is not None and index < EXPIRING
        if fake is not None and expiring:
            access, refresh = fake.seed_token(STANDARD_APP.client_id, int(github_id), f"l{index}")
        else:
            access, refresh = access_token(), refresh_token()

        def seal(value: str, kind: str, user_id: str = user_id, github_id: str = github_id) -> str:
            return keyring.encrypt(value, TokenSlot(user_id, "standard", github_id, kind))

        users.append(User(id=user_id))
        tokens.append(
            UserGithubAppToken(
                user_id=user_id,
                github_app_type="standard",
                github_user_id=github_id,
                github_login=f"l{index}",
                access_token_encrypted=seal(access, "access"),
                access_token_expires_at=T0
                + (timedelta(minutes=1) if expiring else timedelta(hours=8)),
                refresh_token_encrypted=seal(refresh, "refresh"),
                refresh_token_expires_at=T0 + timedelta(days=180),
            )
        )
        plaintexts[user_id] = access
    for start in range(0, rows, 250):
        await User.insert(*users[start : start + 250])
        await UserGithubAppToken.insert(*tokens[start : start + 250])
    return plaintexts


async def _checkout(
    keyring: Keyring, user_id: str, github: GitHubAccess, locks: KeyedLocks
) -> CheckedOutToken | Refusal:
    return await checkout_token(
        WORKER,
        user_id,
        AppType.STANDARD,
        now=T0,
        keyring=keyring,
        github=github,
        locks=locks,
    )


async def test_rotation_rewraps_everything_while_checkouts_run(
    database: Database, fake_github: FakeGitHub
) -> None:
    """1,000 tokens under A; rotate to B; checkouts work during and after; A can then go."""
    plaintexts = await _store_under(Keyring.from_env_values(KEY_A), fake_github)
    rotated = Keyring.from_env_values(KEY_B, KEY_A)
    locks = KeyedLocks()
    async with new_client_session(2.0) as session:
        github = GitHubAccess(
            GitHubClient(
                session, oauth_base_url=fake_github.base_url, api_base_url=fake_github.base_url
            ),
            GitHubApp("standard", STANDARD_APP.client_id, STANDARD_APP.client_secret),
        )
        sample = [f"user{i:04}" for i in range(EXPIRING)] + random.sample(sorted(plaintexts), 60)

        async def checkouts_during_rewrap() -> list[CheckedOutToken | Refusal]:
            results = []
            for user_id in sample:
                results.append(await _checkout(rotated, user_id, github, locks))
                await asyncio.sleep(0)
            return results

        report, during = await asyncio.gather(
            rewrap(rotated, now=T0, batch_size=50), checkouts_during_rewrap()
        )

        for user_id, result in zip(sample, during, strict=True):
            assert isinstance(result, CheckedOutToken), result
            if not result.refreshed and user_id >= f"user{EXPIRING:04}":
                assert result.access_token == plaintexts[user_id]
        assert fake_github.calls["refresh"] == EXPIRING
        assert report.failed == 0
        # A row refreshed before rewrap reached it is already under B and never selected.
        assert ROWS - EXPIRING <= report.rewrapped + report.skipped <= ROWS
        usage = await key_usage()
        assert usage["access"] == {rotated.active_key_id: ROWS}
        assert usage["refresh"] == {rotated.active_key_id: ROWS}

        only_b = Keyring.from_env_values(KEY_B)
        after = await asyncio.gather(
            *(_checkout(only_b, user_id, github, locks) for user_id in sorted(plaintexts))
        )
    assert all(isinstance(result, CheckedOutToken) for result in after)
    refreshed_users = {f"user{i:04}" for i in range(EXPIRING)}
    for user_id, result in zip(sorted(plaintexts), after, strict=True):
        assert isinstance(result, CheckedOutToken), result
        if user_id not in refreshed_users:
            assert result.access_token == plaintexts[user_id]
    (event,) = await AuditEvent.select().where(
        AuditEvent.action == AuditAction.KEYS_REWRAPPED.value
    )
    assert '"failed": 0' in event["detail"]


async def test_an_interrupted_rewrap_finishes_when_run_again(database: Database) -> None:
    """Each batch commits on its own; a second run picks up what is left."""
    await _store_under(Keyring.from_env_values(KEY_A), rows=300)
    rotated = Keyring.from_env_values(KEY_B, KEY_A)

    def interrupt(report: RewrapReport, total: int) -> None:
        if report.batches == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rewrap(rotated, now=T0, batch_size=100, progress=interrupt)
    halfway = await key_usage()
    assert halfway["access"][rotated.active_key_id] == 200

    second = await rewrap(rotated, now=T0, batch_size=100)

    assert second.rewrapped == 100
    assert (await key_usage())["access"] == {rotated.active_key_id: 300}


async def test_key_usage_counts_values_that_name_no_key_as_malformed(database: Database) -> None:
    """Make sure `keys status` shows damaged values instead of inventing key ids for them."""
    await _store_under(Keyring.from_env_values(KEY_A), rows=3)
    await database.engine.run_ddl(
        "UPDATE user_github_app_tokens SET refresh_token_encrypted = 'v1:damaged' "
        "WHERE user_id = 'user0001'"
    )

    usage = await key_usage()

    key_a = Keyring.from_env_values(KEY_A).active_key_id
    assert usage["access"] == {key_a: 3}
    assert usage["refresh"] == {key_a: 2, "malformed": 1}


async def test_a_value_without_its_key_is_counted_not_fatal(database: Database) -> None:
    """Rewrap without the old key reports the rows it could not open and keeps them."""
    await _store_under(Keyring.from_env_values(KEY_A), rows=5)

    report = await rewrap(Keyring.from_env_values(KEY_B), now=T0)

    assert (report.rewrapped, report.failed) == (0, 5)
    assert (await key_usage())["access"] == {Keyring.from_env_values(KEY_A).active_key_id: 5}


def test_keys_status_and_rewrap_commands(tmp_path: Path) -> None:
    """`ghvault keys status` shows rows per key; `keys rewrap` moves them to the active key."""
    ghvault = Path(sys.executable).parent / "ghvault"
    url = f"sqlite:///{tmp_path / 'ghvault.sqlite'}"

    def run(*args: str, key: str, retired: str = "") -> str:
        env = {
            **os.environ,
            **base_env(DATABASE_URL=url, USER_GH_APP_TOKEN_ENCRYPTION_KEY=key),
            "USER_GH_APP_TOKEN_ENCRYPTION_KEYS_RETIRED": retired,
        }
        done = subprocess.run(
            [str(ghvault), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("migrate", "--create", key=KEY_A)
    seed = (
        "import asyncio, os\n"
        "from server.config import Settings\n"
        "from server.storage import engines\n"
        "from tests.domain.test_rotation import _store_under\n"
        "async def main():\n"
        "    settings = Settings.from_env(os.environ)\n"
        "    engine = engines.create_engine(settings.database)\n"
        "    engines.bind_tables(engine)\n"
        "    await engines.start(engine)\n"
        "    await _store_under(settings.keyring, rows=7)\n"
        "    await engines.stop(engine)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, **base_env(DATABASE_URL=url)}
    subprocess.run(
        [sys.executable, "-c", seed],
        env=env,
        check=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    key_a = Keyring.from_env_values(KEY_A).active_key_id
    key_b = Keyring.from_env_values(KEY_B).active_key_id

    before = run("keys", "status", key=KEY_B, retired=KEY_A)
    assert f"{key_a:<10} retired         7        7" in before
    assert f"{key_b:<10} active          0        0" in before

    summary = run("keys", "rewrap", "--batch", "3", key=KEY_B, retired=KEY_A)
    assert "rewrapped 7 rows" in summary

    after = run("keys", "status", key=KEY_B)
    assert f"{key_b:<10} active          7        7" in after
    assert key_a not in after
