"""Which (user, app type) token rows changed, as the database sees it, for every process.

Two sources, one per engine, both reporting only committed changes:

- PostgreSQL: a trigger (migration 2026-11-30T12:30) NOTIFYs on every change
  a status read would see; each process LISTENs on one connection of its
  own, outside the pool, opened at its first subscriber and reconnected
  when it is lost. After a reconnect
  every watched key counts as changed, since notifications sent meanwhile
  are gone.
- SQLite has no NOTIFY. Each process polls the rows it has been asked to
  watch (one indexed read per `POLL_SECONDS`, only while something is
  watched) and reports those whose (id, credential_version, revoked_at)
  moved. That sees writes by other processes on the same file too. So does
  PostgreSQL behind a transaction pooler without a direct DATABASE_LISTEN_URL,
  where LISTEN cannot work, and where a start-up check finds that
  notifications sent through the pool never reach the LISTEN connection.

Either way `on_change` gets the keys that changed; subscribers re-read the
status themselves, so a missed or duplicated report costs one read, never a
wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from server.domain.enums import AppType
from server.storage.tables import UserGithubAppToken as Token

logger = logging.getLogger("ghvault.token_changes")

TokenKey = tuple[str, AppType]
ChangeCallback = Callable[[Iterable[TokenKey]], None]

CHANNEL = "ghvault_token_changes"
POLL_SECONDS = 0.25
POLL_CHUNK = 500
LISTEN_CONNECT_TIMEOUT_SECONDS = 5.0
LISTEN_RETRY_SECONDS = 1.0
LISTEN_RETRY_MAX_SECONDS = 30.0
# A LISTEN connection whose server vanished without closing it is only
# noticed when it is used: it is pinged this often.
LISTEN_PING_SECONDS = 30.0
# How long a new watcher waits for the LISTEN connection before going on
# without it (it hears about changes once the connection is back).
LISTEN_READY_SECONDS = 5.0
# At start-up a notification sent through the pool must reach a LISTEN
# connection within this long, or the process polls instead.
LISTEN_CHECK_SECONDS = 2.0
LISTEN_CHECK_CHANNEL = "ghvault_listen_check"


class ChangeSource:
    """Reports changed keys to `on_change`; `watch`/`unwatch` say which keys matter.

    A source does its work in one background task (`_task`), which ends once
    `_stopping` is set.
    """

    # What /readyz reports: "listen" (NOTIFY) or "poll".
    mode = "poll"

    def __init__(self, on_change: ChangeCallback) -> None:
        self.on_change = on_change
        self.watched: Counter[TokenKey] = Counter()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def hearing(self) -> bool:
        """False while watched keys cannot hear about changes (a lost LISTEN connection)."""
        return True

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        # Not cancelled: a query cancelled part-way would strand its connection.
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def watch(self, key: TokenKey) -> None:
        """Call before reading the status: changes after this call are reported."""
        self.watched[key] += 1

    def unwatch(self, key: TokenKey) -> None:
        self.watched[key] -= 1
        if self.watched[key] <= 0:
            del self.watched[key]


class PostgresChanges(ChangeSource):
    """LISTEN on a dedicated connection; the trigger sends the keys."""

    mode = "listen"

    def __init__(self, dsn: str, on_change: ChangeCallback) -> None:
        super().__init__(on_change)
        self._dsn = dsn
        self._listening = asyncio.Event()

    @property
    def hearing(self) -> bool:
        return not self.watched or self._listening.is_set()

    async def start(self) -> None:
        # The connection is opened by the first watcher: a process nobody
        # subscribes to holds no extra connection.
        pass

    async def watch(self, key: TokenKey) -> None:
        await super().watch(key)
        if self._task is None and not self._stopping.is_set():
            self._task = asyncio.create_task(self._listen_forever())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), LISTEN_READY_SECONDS)

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        try:
            change = json.loads(str(payload))  # asyncpg hands NOTIFY payloads over as text
            key = (change["user_id"], AppType(change["app_type"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed token change notification")
            return
        if key in self.watched:
            self.on_change([key])

    async def _listen_forever(self) -> None:
        retry = LISTEN_RETRY_SECONDS
        while not self._stopping.is_set():
            try:
                await self._listen_once()
                retry = LISTEN_RETRY_SECONDS
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                logger.warning(
                    "listening for token changes failed (%s); retrying in %g s",
                    type(exc).__name__,
                    retry,
                )
                retry = min(retry * 2, LISTEN_RETRY_MAX_SECONDS)
            self._listening.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), retry)

    async def _listen_once(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=LISTEN_CONNECT_TIMEOUT_SECONDS)
        try:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(CHANNEL, self._notified)
            self._listening.set()
            # Whatever changed while nobody listened was not heard: re-read it all.
            if self.watched:
                self.on_change(list(self.watched))
            while not (lost.is_set() or self._stopping.is_set()):
                waiters = {
                    asyncio.ensure_future(lost.wait()),
                    asyncio.ensure_future(self._stopping.wait()),
                }
                _, pending = await asyncio.wait(
                    waiters, timeout=LISTEN_PING_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in pending:
                    waiter.cancel()
                if not (lost.is_set() or self._stopping.is_set()):
                    await connection.fetchval("SELECT 1", timeout=LISTEN_CONNECT_TIMEOUT_SECONDS)
        finally:
            self._listening.clear()
            if not connection.is_closed():
                try:
                    await asyncio.wait_for(connection.close(), LISTEN_CONNECT_TIMEOUT_SECONDS)
                except (OSError, asyncpg.PostgresError, TimeoutError):
                    connection.terminate()


Fingerprint = tuple[Any, ...]


class Polling(ChangeSource):
    """Polls the watched rows; reports the keys whose fingerprint moved."""

    def __init__(self, on_change: ChangeCallback, interval: float = POLL_SECONDS) -> None:
        super().__init__(on_change)
        self.interval = interval
        self._seen: dict[TokenKey, Fingerprint | None] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever())

    async def watch(self, key: TokenKey) -> None:
        await super().watch(key)
        if key not in self._seen:
            self._seen.update(await _fingerprints([key]))

    def unwatch(self, key: TokenKey) -> None:
        super().unwatch(key)
        if key not in self.watched:
            self._seen.pop(key, None)

    async def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            if self._stopping.is_set() or not self.watched:
                continue
            try:
                await self._poll()
            except Exception as exc:  # noqa: BLE001 -- the next poll tries again
                logger.warning("polling for token changes failed: %s", type(exc).__name__)

    async def _poll(self) -> None:
        keys = list(self.watched)
        current = await _fingerprints(keys)
        changed = [
            key
            for key in keys
            if key in self.watched and key in self._seen and current[key] != self._seen[key]
        ]
        for key in keys:
            if key in self.watched:
                self._seen[key] = current[key]
        if changed:
            self.on_change(changed)


async def _fingerprints(keys: list[TokenKey]) -> dict[TokenKey, Fingerprint | None]:
    """(id, credential_version, revoked_at) per key; None where no row exists."""
    found: dict[TokenKey, Fingerprint | None] = dict.fromkeys(keys)
    users = sorted({user_id for user_id, _ in keys})
    for start in range(0, len(users), POLL_CHUNK):
        rows = await Token.select(
            Token.user_id,
            Token.github_app_type,
            Token.id,
            Token.credential_version,
            Token.revoked_at,
        ).where(Token.user_id.is_in(users[start : start + POLL_CHUNK]))
        for row in rows:
            key = (row["user_id"], AppType(row["github_app_type"]))
            if key in found:
                found[key] = (row["id"], row["credential_version"], row["revoked_at"])
    return found


async def notifications_arrive(engine: PostgresEngine, listen_dsn: str) -> bool:
    """Whether a NOTIFY sent through the engine's pool reaches a LISTEN on `listen_dsn`.

    It does not when the pool goes through a transaction pooler and so does
    the LISTEN (the notification goes to whichever client holds that server
    connection then), or when the two URLs name different databases.
    """
    heard = asyncio.Event()
    nonce = uuid.uuid4().hex
    connection = await asyncpg.connect(listen_dsn, timeout=LISTEN_CONNECT_TIMEOUT_SECONDS)
    try:
        await connection.add_listener(
            LISTEN_CHECK_CHANNEL, lambda *args: heard.set() if args[3] == nonce else None
        )
        await engine.run_ddl(f"SELECT pg_notify('{LISTEN_CHECK_CHANNEL}', '{nonce}')")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), LISTEN_CHECK_SECONDS)
    finally:
        connection.terminate()
    return heard.is_set()


async def change_source(
    engine: Engine[Any], on_change: ChangeCallback, *, listen_dsn: str | None
) -> ChangeSource:
    """NOTIFY on PostgreSQL where a LISTEN connection hears it, polling otherwise."""
    if not isinstance(engine, PostgresEngine) or listen_dsn is None:
        return Polling(on_change)
    try:
        arrived = await notifications_arrive(engine, listen_dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        logger.warning(
            "cannot LISTEN on the database (%s): status subscriptions poll instead; check "
            "DATABASE_LISTEN_URL",
            type(exc).__name__,
        )
        return Polling(on_change)
    if not arrived:
        logger.warning(
            "a NOTIFY sent through DATABASE_URL did not reach a LISTEN connection within %g s: "
            "status subscriptions poll instead. Behind a transaction pooler (PgBouncer "
            "pool_mode=transaction) set DATABASE_POOL_MODE=transaction and point "
            "DATABASE_LISTEN_URL at the database directly",
            LISTEN_CHECK_SECONDS,
        )
        return Polling(on_change)
    return PostgresChanges(listen_dsn, on_change)
