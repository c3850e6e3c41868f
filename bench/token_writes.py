"""What the token-count triggers (migration 2026-11-30T16:00:00) add to token writes.

    .venv/bin/python -m bench.token_writes [--rows 100000] [--writes 1000] [--postgres URL]

Per engine, two databases: one migrated in full, one migrated in full and
then without the counts migration (`piccolo migrations backwards`). Each is
filled with --rows tokens as bench/token_stats.py fills them (the fill is
timed: a bulk insert), then takes --writes single-row writes of each kind,
one transaction each, on rows picked at random, through the driver itself
(sqlite3 with ghvault's pragmas, asyncpg), so the figures are the database's
own cost of a write and nothing of Python's around it:

- store: a new user and token (INSERT, INSERT);
- refresh: new ciphertexts, expiries and version (what a refresh writes);
- note use: `last_used_at` only (what every checkout writes);
- revoke: `revoked_at` set, ciphertexts erased;
- delete: the token row (what purge and disconnect do).

The two databases are measured alternately, kind by kind, so load on the
machine falls on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.token_stats import POSTGRES_FILL, ROOT, SQLITE_FILL, migrate

COUNTS_MIGRATION = "2026-11-30T16:00:00:000000"
KINDS = ("store", "refresh", "note use", "revoke", "delete")

INSERT_USER = "INSERT INTO users (id, created_at) VALUES ($1, $2)"
INSERT_TOKEN = (
    "INSERT INTO user_github_app_tokens (id, user_id, github_app_type, github_user_id, "
    "github_login, access_token_encrypted, access_token_expires_at, refresh_token_encrypted, "
    "refresh_token_expires_at, credential_version, created_at, updated_at) "
    "VALUES ($1, $2, 'standard', $3, $4, $5, $6, $7, $8, 1, $9, $9)"
)
REFRESH = (
    "UPDATE user_github_app_tokens SET access_token_encrypted = $1, "
    "access_token_expires_at = $2, refresh_token_encrypted = $3, refresh_token_expires_at = $4, "
    "credential_version = credential_version + 1, last_refreshed_at = $5, updated_at = $5 "
    "WHERE user_id = $6"
)
NOTE_USE = "UPDATE user_github_app_tokens SET last_used_at = $1 WHERE user_id = $2"
REVOKE = (
    "UPDATE user_github_app_tokens SET revoked_at = $1, revocation_reason = 'admin', "
    "access_token_encrypted = NULL, refresh_token_encrypted = NULL, "
    "credential_version = credential_version + 1, updated_at = $1 WHERE user_id = $2"
)
DELETE = "DELETE FROM user_github_app_tokens WHERE user_id = $1"


def unmigrate_counts(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "PICCOLO_CONF": "piccolo_conf"}
    piccolo = Path(sys.executable).parent / "piccolo"
    command = [str(piccolo), "migrations", "backwards", "ghvault", COUNTS_MIGRATION, "--auto_agree"]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)  # noqa: S603


def statements(kind: str, index: int, user: str) -> list[tuple[str, tuple[Any, ...]]]:
    now = datetime.now(UTC)
    sealed = f"v1:bench:{uuid.uuid4().hex}"
    if kind == "store":
        new_user = f"w{index}"
        return [
            (INSERT_USER, (new_user, now)),
            (
                INSERT_TOKEN,
                (
                    str(uuid.uuid4()),
                    new_user,
                    f"w{index}",
                    f"lw{index}",
                    sealed,
                    now + timedelta(hours=8),
                    sealed,
                    now + timedelta(days=180),
                    now,
                ),
            ),
        ]
    if kind == "refresh":
        expiries = (now + timedelta(hours=8), now + timedelta(days=180))
        return [(REFRESH, (sealed, expiries[0], sealed, expiries[1], now, user))]
    if kind == "note use":
        return [(NOTE_USE, (now, user))]
    if kind == "revoke":
        return [(REVOKE, (now, user))]
    return [(DELETE, (user,))]


class SQLiteTarget:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.connection: sqlite3.Connection | None = None

    def fill(self, rows: int) -> None:
        now = str(datetime.now(UTC).replace(microsecond=0))
        with sqlite3.connect(self.path) as connection:
            connection.executescript(SQLITE_FILL.format(rows=rows, now=now))
        connection.close()

    def open(self) -> None:
        # ghvault's pragmas (server/storage/sqlite_pool.py).
        self.connection = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON"):
            self.connection.execute(f"PRAGMA {pragma}")

    async def run(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        assert self.connection is not None
        self.connection.execute("BEGIN IMMEDIATE")
        for sql, args in batch:
            values = tuple(str(value) if isinstance(value, datetime) else value for value in args)
            self.connection.execute(sql.replace("$", "?"), values)
        self.connection.execute("COMMIT")

    async def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


class PostgresTarget:
    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: asyncpg.Connection | None = None

    async def fill_async(self, rows: int) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(POSTGRES_FILL.format(rows=rows))
        finally:
            await connection.close()

    async def open_async(self) -> None:
        self.connection = await asyncpg.connect(self.url)

    async def run(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        assert self.connection is not None
        async with self.connection.transaction():
            for sql, args in batch:
                await self.connection.execute(sql, *args)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


async def timed_writes(
    targets: dict[str, Any], rows: int, writes: int, seed: int
) -> dict[tuple[str, str], list[float]]:
    """Per (database, kind): the seconds of each write. Both databases write the same rows."""
    picks = random.Random(seed).sample(range(1, rows + 1), len(KINDS) * writes)  # noqa: S311 -- which rows, not a secret
    seconds: dict[tuple[str, str], list[float]] = {}
    for number, kind in enumerate(KINDS):
        users = [f"u{pick}" for pick in picks[number * writes : (number + 1) * writes]]
        for name, target in targets.items():
            run: Callable[[list[tuple[str, tuple[Any, ...]]]], Awaitable[None]] = target.run
            spent = seconds[name, kind] = []
            for index, user in enumerate(users):
                batch = statements(kind, index, user)
                started = time.perf_counter()
                await run(batch)
                spent.append(time.perf_counter() - started)
    return seconds


def report(
    engine: str, fills: dict[str, float], seconds: dict[tuple[str, str], list[float]]
) -> None:
    print(
        f"{engine}: fill {fills['without counts']:.1f} s without counts, "
        f"{fills['with counts']:.1f} s with them"
    )
    print(
        f"  {'write':<10} {'median µs without':>18} {'with':>8} {'added':>8}"
        f" {'mean µs without':>16} {'with':>8}"
    )
    for kind in KINDS:
        without, with_ = seconds["without counts", kind], seconds["with counts", kind]
        medians = [statistics.median(values) * 1e6 for values in (without, with_)]
        means = [statistics.fmean(values) * 1e6 for values in (without, with_)]
        print(
            f"  {kind:<10} {medians[0]:>18.0f} {medians[1]:>8.0f} {medians[1] - medians[0]:>8.0f}"
            f" {means[0]:>16.0f} {means[1]:>8.0f}"
        )


async def on_sqlite(rows: int, writes: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        targets = {
            name: SQLiteTarget(Path(directory) / f"{name.replace(' ', '_')}.sqlite")
            for name in ("without counts", "with counts")
        }
        fills = {}
        for name, target in targets.items():
            migrate(target.url)
            if name == "without counts":
                unmigrate_counts(target.url)
            started = time.perf_counter()
            target.fill(rows)
            fills[name] = time.perf_counter() - started
            target.open()
        try:
            seconds = await timed_writes(targets, rows, writes, seed)
        finally:
            for target in targets.values():
                await target.close()
        report("sqlite", fills, seconds)


async def on_postgres(url: str, rows: int, writes: int, seed: int) -> None:
    admin = await asyncpg.connect(url)
    names = {
        name: f"ghvault_bench_{uuid.uuid4().hex[:8]}" for name in ("without counts", "with counts")
    }
    targets = {
        name: PostgresTarget(urlunsplit(urlsplit(url)._replace(path=f"/{database}")))
        for name, database in names.items()
    }
    try:
        fills = {}
        for name, target in targets.items():
            await admin.execute(f'CREATE DATABASE "{names[name]}"')
            migrate(target.url)
            if name == "without counts":
                unmigrate_counts(target.url)
            started = time.perf_counter()
            await target.fill_async(rows)
            fills[name] = time.perf_counter() - started
            await target.open_async()
        seconds = await timed_writes(targets, rows, writes, seed)
        report("postgres", fills, seconds)
    finally:
        for target in targets.values():
            await target.close()
        for database in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"))
    args = parser.parse_args()
    print(
        f"{args.rows} rows, {args.writes} writes of each kind, load average "
        f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}"
    )
    await on_sqlite(args.rows, args.writes, args.seed)
    if args.postgres:
        await on_postgres(args.postgres, args.rows, args.writes, args.seed)


if __name__ == "__main__":
    asyncio.run(main())
