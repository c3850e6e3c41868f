"""Hot reads outside the ORM: the same rows, the transaction's view, no lingering reader."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from server.auth import Principal
from server.crypto import Keyring
from server.domain import refresh, status
from server.domain.enums import AppType, Role, TokenState
from server.domain.tokens import StoredToken, StoreTokenInput, store_token
from server.storage import reads
from server.storage.sqlite_pool import PooledSQLiteEngine
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import write_transaction
from tests.helpers import T0, Database, access_token, refresh_token

ADMIN = Principal(id="admin", role=Role.ADMIN)


async def store(user_id: str, keyring: Keyring) -> None:
    data = StoreTokenInput(
        user_id=user_id,
        app_type=AppType.STANDARD,
        github_user_id=str(abs(hash(user_id)) % 10_000_000),
        github_login=f"login-{user_id}",
        access_token=access_token(),
        access_token_expires_at=T0 + timedelta(hours=8),
        refresh_token=refresh_token(),
        refresh_token_expires_at=T0 + timedelta(days=180),
    )
    result = await store_token(ADMIN, data, keyring=keyring, now=T0)
    assert isinstance(result, StoredToken), result


@pytest.fixture
def keyring(settings) -> Keyring:
    return settings.keyring


async def test_the_hot_read_returns_what_the_orm_returns(
    database: Database, keyring: Keyring
) -> None:
    """Make sure a status read off the ORM gives the same row, types included."""
    await store("alice", keyring)
    fast = await status._STATUS_OF.first("alice", "standard")
    orm = await status._STATUS_OF.build("alice", "standard").first()
    assert fast == orm
    assert fast is not None
    assert fast["created_at"].tzinfo is not None
    assert await status._STATUS_OF.first("nobody", "standard") is None


async def test_the_checkout_read_returns_what_the_orm_returns(
    database: Database, keyring: Keyring
) -> None:
    """Make sure checkout's first read off the ORM gives the same row, ciphertext and
    ids included, as the ORM's query."""
    await store("alice", keyring)
    fast = await refresh.read_token("alice", AppType.STANDARD)
    orm = await refresh.select_token("alice", AppType.STANDARD).first()
    assert fast == orm
    assert fast is not None
    assert fast["access_token_encrypted"].startswith("v1:")
    assert fast["access_token_expires_at"].tzinfo is not None
    assert await refresh.read_token("nobody", AppType.STANDARD) is None


async def test_inside_a_transaction_the_read_sees_its_writes(
    database: Database, keyring: Keyring
) -> None:
    """Make sure a read inside a write transaction sees that transaction's uncommitted change."""
    await store("alice", keyring)

    class RollBack(Exception):
        pass

    async def revoke_and_look() -> None:
        async with write_transaction():
            await Token.update({Token.revoked_at: T0}).where(Token.user_id == "alice")
            seen.append(await status.token_status("alice", AppType.STANDARD, T0))
            raise RollBack

    seen: list[status.TokenStatus] = []
    with pytest.raises(RollBack):
        await revoke_and_look()
    assert [found.state for found in seen] == [TokenState.REVOKED]
    after = await status.token_status("alice", AppType.STANDARD, T0)
    assert after.state is TokenState.ACTIVE


async def test_a_busy_sqlite_answer_falls_back_to_the_pool(
    database: Database, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make sure a read the loop connection cannot do now still answers, through the pool."""
    if not database.is_sqlite:
        pytest.skip("the loop-thread reader is SQLite's")
    await store("alice", keyring)

    def busy(self: reads.LoopReader, sql: str, args: list) -> list:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(reads.LoopReader, "fetch", busy)
    found = await status.token_status("alice", AppType.STANDARD, T0)
    assert found.state is TokenState.ACTIVE


async def test_other_sqlite_errors_are_not_hidden(
    database: Database, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make sure only "busy" falls back; a broken database still fails the read."""
    if not database.is_sqlite:
        pytest.skip("the loop-thread reader is SQLite's")

    def broken(self: reads.LoopReader, sql: str, args: list) -> list:
        raise sqlite3.OperationalError("no such table: user_github_app_tokens")

    monkeypatch.setattr(reads.LoopReader, "fetch", broken)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await status.token_status("alice", AppType.STANDARD, T0)


async def test_a_hot_read_leaves_no_reader_holding_the_log(
    database: Database, keyring: Keyring
) -> None:
    """Make sure the write-ahead log can be truncated right after hot reads (purges need it)."""
    if not database.is_sqlite:
        pytest.skip("WAL checkpoints are SQLite's")
    await store("alice", keyring)
    for _ in range(3):
        await status.token_status("alice", AppType.STANDARD, T0)
    engine = database.engine
    assert isinstance(engine, PooledSQLiteEngine)
    assert engine.loop_reader is not None
    assert await engine.truncate_wal()
