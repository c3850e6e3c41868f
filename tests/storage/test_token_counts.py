"""The token counts the triggers keep: tidy, safe under concurrency, and reset with the table.

Whether the counts are right at every instant is tested against a per-row
derivation in tests/domain/test_stats.py; these tests are about the kept
rows themselves.
"""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import timedelta

import asyncpg
import pytest

from server.domain.stats import token_stats
from server.domain.status import count_by_state, state_condition
from server.domain.sweep import DEFAULT_WINDOW, count_due, due_condition
from server.storage import token_counts
from server.storage.tables import User
from server.storage.tables import UserGithubAppToken as Token
from tests.helpers import (
    PROJECT_ROOT,
    T0,
    Database,
    assert_stats_agree_with_rows,
    insert_varied_tokens,
)

COUNTS_MIGRATION = PROJECT_ROOT / "piccolo_migrations" / "ghvault_2026_11_30t16_00_00_000000.py"


async def kept_rows(database: Database) -> list[dict]:
    rows = await database.fetch(f"SELECT * FROM {token_counts.COUNTS}")
    if not database.is_sqlite:
        rows += await database.fetch(f"SELECT * FROM {token_counts.CHANGES}")
    return rows


def test_the_kept_window_is_the_sweeps_default() -> None:
    """Make sure the window the migration keeps `due_from` for is the one stats ask about."""
    spec = importlib.util.spec_from_file_location("counts_migration", COUNTS_MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert timedelta(hours=migration.DUE_WINDOW_HOURS) == token_counts.KEPT_DUE_WINDOW
    assert token_counts.KEPT_DUE_WINDOW == DEFAULT_WINDOW


async def test_counts_that_reach_zero_are_deleted(database: Database) -> None:
    """Make sure moving and deleting tokens leaves no empty count rows behind, and that
    with no token left nothing is kept (PostgreSQL's changes folded in by a read)."""
    await insert_varied_tokens()
    await Token.update({Token.access_token_expires_at: T0 + timedelta(days=2)}).where(
        Token.access_token_expires_at.is_not_null()
    )
    await token_stats(T0)
    assert await kept_rows(database)
    assert all(row["n"] != 0 for row in await kept_rows(database))
    if not database.is_sqlite:
        assert not await database.fetch(f"SELECT * FROM {token_counts.CHANGES}")

    await Token.delete(force=True)
    stats = await token_stats(T0)
    assert [item.count for item in stats.by_state] == [0] * 8
    assert await kept_rows(database) == []


async def test_emptying_the_tokens_at_once_empties_the_counts(database: Database) -> None:
    """Make sure a TRUNCATE on PostgreSQL (which fires no row trigger), or a DELETE of
    everything on SQLite (which SQLite would truncate were there no trigger), leaves no
    count behind."""
    await insert_varied_tokens()
    if database.is_sqlite:
        await database.engine.run_ddl("DELETE FROM users")
    else:
        await database.engine.run_ddl("TRUNCATE users CASCADE")
    assert await Token.count() == 0
    assert await kept_rows(database) == []
    await insert_varied_tokens()
    await assert_stats_agree_with_rows({T0, T0 + timedelta(hours=9)})


async def test_a_window_opened_on_a_token_moves_no_count(database: Database) -> None:
    """Make sure what every checkout writes (its window and last_used_at) fires no count
    change: the kept rows stay exactly as they were, nothing appended on PostgreSQL."""
    await insert_varied_tokens()
    await token_stats(T0)
    before = await kept_rows(database)

    await Token.update(
        {Token.leased_until: T0 + timedelta(minutes=10), Token.last_used_at: T0}, force=True
    )

    assert await kept_rows(database) == before
    await assert_stats_agree_with_rows({T0, T0 + timedelta(hours=9)})


async def test_concurrent_writes_and_reads_keep_the_counts_exact(database: Database) -> None:
    """Make sure writers and readers (each folding PostgreSQL's changes) running at once
    neither lose nor double a change."""
    await insert_varied_tokens()

    async def write(index: int) -> None:
        user_id = f"concurrent{index}"
        await User.insert(User(id=user_id))
        await Token.insert(
            Token(
                user_id=user_id,
                github_app_type="standard",
                github_user_id=str(90_000 + index),
                github_login=f"login{index}",
                access_token_expires_at=T0 + timedelta(minutes=index),
                refresh_token_encrypted="v1:opaque",
                refresh_token_expires_at=T0 + timedelta(days=index),
            )
        )
        await Token.update({Token.revoked_at: T0}).where(Token.user_id == f"varied{index:03}")
        await Token.delete().where(Token.user_id == f"varied{index + 100:03}")

    async def read() -> None:
        await token_stats(T0)

    await asyncio.gather(*(task for index in range(40) for task in (write(index), read())))
    await assert_stats_agree_with_rows()


async def test_changes_not_yet_folded_are_counted(database: Database) -> None:
    """Make sure a read counts PostgreSQL's appended changes whether they were folded in
    whole, in part, or not at all (another reader holding the fold)."""
    if database.is_sqlite:
        pytest.skip("SQLite updates the counts in place")
    await insert_varied_tokens()
    assert await token_counts.fold_changes(batch=10) == 10
    await Token.update({Token.revoked_at: T0}).where(Token.user_id.like("varied1%"))

    holder = await asyncpg.connect(database.url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", token_counts.FOLD_LOCK)
            await assert_stats_agree_with_rows()
            assert await token_counts.fold_changes() == 0
            assert await database.fetch(f"SELECT * FROM {token_counts.CHANGES}")
    finally:
        await holder.close()
    await assert_stats_agree_with_rows({T0})
    assert not await database.fetch(f"SELECT * FROM {token_counts.CHANGES}")


async def test_infinite_expiries_count_as_the_state_filters_do(database: Database) -> None:
    """Make sure PostgreSQL's 'infinity' and '-infinity', which only SQL can write, neither
    break a write nor a count: the counts equal the state filters' and the sweep's SQL."""
    if database.is_sqlite:
        pytest.skip("SQLite stores timestamps as text; ghvault writes no infinity there")
    await insert_varied_tokens()
    await database.engine.run_ddl(
        "UPDATE user_github_app_tokens SET access_token_expires_at = CASE "
        "WHEN user_id LIKE '%1' THEN timestamptz 'infinity' "
        "WHEN user_id LIKE '%2' THEN timestamptz '-infinity' "
        "ELSE access_token_expires_at END, refresh_token_expires_at = CASE "
        "WHEN user_id LIKE '%3' THEN timestamptz 'infinity' "
        "WHEN user_id LIKE '%4' THEN timestamptz '-infinity' "
        "ELSE refresh_token_expires_at END"
    )
    for now in (T0 - timedelta(days=400), T0, T0 + timedelta(hours=8, microseconds=1)):
        counts = await count_by_state(now)
        for (app_type, state), count in counts.items():
            condition = state_condition(state, now)
            assert condition is not None
            expected = await Token.count().where(
                condition & (Token.github_app_type == app_type.value)
            )
            assert count == expected, (now, app_type, state)
        assert await count_due(now) == await Token.count().where(due_condition(now, DEFAULT_WINDOW))
