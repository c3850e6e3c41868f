"""Rolling migrations back loses no data by accident and never re-opens a webhook replay."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from server.auth import Principal
from server.config import Settings
from server.crypto import Keyring
from server.domain.enums import AppType, Role, TokenState
from server.domain.status import token_status
from server.domain.tokens import StoredToken, StoreTokenInput, store_token
from server.domain.webhook import handle_delivery
from server.storage.rollback import DROP_DATA_VARIABLE
from tests.helpers import T0, access_token, base_env, refresh_token, run_piccolo
from tests.storage.test_migrations import (
    APP_TABLES,
    ENGINES,
    GHVAULT,
    Target,
    _new_target,
    bound_to,
    connect,
    migration_status,
    run_piccolo_ok,
    table_names,
)

FIRST_MIGRATION = "2026-11-28T10:56:34:687526"
REPLAY_MIGRATION = "2026-11-30T12:14:21:170244"
SERVICE = Principal(id="commit-worker", role=Role.SERVICE)
GITHUB_USER_ID = "583231"
REVOKED = json.dumps(
    {"action": "revoked", "sender": {"id": int(GITHUB_USER_ID), "login": "octocat"}}
).encode()


@pytest.fixture(params=ENGINES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A database with nothing in it, one per engine."""
    with _new_target(request.param, request, tmp_path) as target:
        yield target


async def _add_a_user(target: Target) -> None:
    async with connect(target) as connection:
        await connection.execute(
            "INSERT INTO users (id, created_at) VALUES ($1, $2)", "alice", connection.time(T0)
        )


async def test_undoing_the_first_migration_refuses_to_drop_rows(empty_database: Target) -> None:
    """Make sure `backwards all` stops at the migration whose tables hold rows, says which
    and how many, and keeps them; and that with the flag it drops them."""
    target = empty_database
    run_piccolo_ok("migrations", "forwards", "all", target=target)
    await _add_a_user(target)

    refused = run_piccolo("migrations", "backwards", "all", "--auto_agree", database_url=target.url)

    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert f"undoing migration {FIRST_MIGRATION} would drop users (1 row)" in output
    assert f"--backwards {FIRST_MIGRATION} --drop-data" in output
    assert migration_status(target)[FIRST_MIGRATION] == "True"
    async with connect(target) as connection:
        assert await connection.fetch("SELECT id FROM users") == [("alice",)]

    result = run_piccolo(
        "migrations",
        "backwards",
        "all",
        "--auto_agree",
        database_url=target.url,
        extra_env={DROP_DATA_VARIABLE: "yes"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert not (APP_TABLES - {"github_webhook_payloads"}) & await table_names(target)


def _ghvault_migrate(target: Target, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != DROP_DATA_VARIABLE}
    return subprocess.run(
        [str(GHVAULT), "migrate", *args],
        env={**env, "DATABASE_URL": target.url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_ghvault_migrate_backwards_needs_drop_data_to_lose_rows(
    empty_database: Target,
) -> None:
    """The same through `ghvault migrate --backwards`: one line naming the flag, exit 1;
    with --drop-data the rows go."""
    target = empty_database
    assert _ghvault_migrate(target, "--create").returncode == 0
    await _add_a_user(target)

    refused = _ghvault_migrate(target, "--backwards", "all")

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"ghvault: undoing migration {FIRST_MIGRATION} would drop users (1 row), so nothing of "
        "it was undone (`ghvault migrate` restores any later ones undone before it). To drop "
        f"them, run `ghvault migrate --backwards {FIRST_MIGRATION} --drop-data`, or set "
        f"{DROP_DATA_VARIABLE}=yes for `piccolo migrations backwards`"
    ]
    dropped = _ghvault_migrate(target, "--backwards", "all", "--drop-data")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert "users" not in await table_names(target)
    assert _ghvault_migrate(target, "--drop-data").returncode == 2


async def _connect_octocat(keyring: Keyring) -> None:
    stored = await store_token(
        SERVICE,
        StoreTokenInput(
            user_id="alice",
            app_type=AppType.STANDARD,
            github_user_id=GITHUB_USER_ID,
            github_login="octocat",
            access_token=access_token(),
            access_token_expires_at=T0 + timedelta(hours=8),
            refresh_token=refresh_token(),
        ),
        keyring=keyring,
        now=T0,
    )
    assert isinstance(stored, StoredToken)


async def _replay(delivery_id: str) -> int:
    outcome = await handle_delivery(
        app_type=AppType.STANDARD,
        delivery_id=delivery_id,
        body=REVOKED,
        event="github_app_authorization",
        payload=json.loads(REVOKED),
        now=T0,
    )
    return outcome.revoked


async def test_rolling_back_and_forwards_never_re_enables_a_webhook_replay(
    empty_database: Target,
) -> None:
    """The attack: after `backwards` and `forwards` again, a captured signed revocation
    replayed under a new delivery id revoked the reconnected token. Whether the replay
    protection's own migration or every migration (with --drop-data) is undone, the
    signed bodies already acted on are kept, and the replay changes nothing."""
    target = empty_database
    keyring = Settings.from_env(base_env()).keyring
    run_piccolo_ok("migrations", "forwards", "all", target=target)
    async with bound_to(target):
        await _connect_octocat(keyring)
        assert await _replay("delivery-1") == 1

    for rollback in ([REPLAY_MIGRATION], ["all", "--drop-data"]):
        assert _ghvault_migrate(target, "--backwards", *rollback).returncode == 0
        # Once every migration is undone the database is a new one: --create agrees.
        assert _ghvault_migrate(target, "--create").returncode == 0
        async with bound_to(target):
            await _connect_octocat(keyring)
            assert await _replay(f"delivery-after-{rollback[0]}") == 0
            status = await token_status("alice", AppType.STANDARD, T0)
            assert status.state is TokenState.ACTIVE, rollback
