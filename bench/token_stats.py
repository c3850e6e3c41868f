"""How long githubTokenStats and a sweep's candidate query take over many rows.

    .venv/bin/python -m bench.token_stats --rows 1000000 [--postgres URL]

Rows are made in SQL (generate_series on PostgreSQL, a recursive CTE on
SQLite) with a spread of expiries, revocations and both app types; the
ciphertext columns hold placeholders, since neither query reads them. SQLite
ids are dashed like Piccolo's UUIDs: the column has numeric affinity, and a
bare hex id such as `1234e5678...` would be stored as a number (two of them
can collide as infinity). The fill's time is printed, with the token-count
triggers at work; on PostgreSQL, so is the time to fold the changes they
appended, done before the first measurement. Each query runs --repeat times
after one warm-up run; the table shows the median and the fastest.
PostgreSQL runs in a database `ghvault_bench_<random>`, dropped at the end;
SQLite in a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from server.domain.stats import token_stats
from server.domain.sweep import DEFAULT_WINDOW, due_candidates
from server.storage import engines
from server.storage.sqlite_pool import PooledSQLiteEngine
from server.storage.token_counts import fold_changes

ROOT = Path(__file__).resolve().parent.parent

# Expiries spread over -20..+80 hours (access) and -10..+190 days (refresh);
# one row in 13 revoked, one in 5 of the lite app.
POSTGRES_FILL = """
INSERT INTO users (id, created_at)
SELECT 'u' || g, now() FROM generate_series(1, {rows}) AS g;
INSERT INTO user_github_app_tokens (
    id, user_id, github_app_type, github_user_id, github_login,
    access_token_encrypted, access_token_expires_at,
    refresh_token_encrypted, refresh_token_expires_at,
    credential_version, revoked_at, created_at, updated_at)
SELECT gen_random_uuid(), 'u' || g, CASE WHEN g % 5 = 0 THEN 'lite' ELSE 'standard' END,
    g::text, 'l' || g,
    'v1:placeholder', now() + ((g % 100) - 20) * interval '1 hour',
    'v1:placeholder', now() + ((g % 200) - 10) * interval '1 day',
    1, CASE WHEN g % 13 = 0 THEN now() END, now(), now()
FROM generate_series(1, {rows}) AS g;
ANALYZE;
"""

SQLITE_FILL = """
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
INSERT INTO users (id, created_at) SELECT 'u' || n, '{now}' FROM g;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
INSERT INTO user_github_app_tokens (
    id, user_id, github_app_type, github_user_id, github_login,
    access_token_encrypted, access_token_expires_at,
    refresh_token_encrypted, refresh_token_expires_at,
    credential_version, revoked_at, created_at, updated_at)
SELECT printf('%s-%s-%s-%s-%s', lower(hex(randomblob(4))), lower(hex(randomblob(2))),
        lower(hex(randomblob(2))), lower(hex(randomblob(2))), lower(hex(randomblob(6)))),
    'u' || n, CASE WHEN n % 5 = 0 THEN 'lite' ELSE 'standard' END,
    CAST(n AS TEXT), 'l' || n,
    'v1:placeholder', strftime('%Y-%m-%d %H:%M:%S+00:00', 'now', ((n % 100) - 20) || ' hours'),
    'v1:placeholder', strftime('%Y-%m-%d %H:%M:%S+00:00', 'now', ((n % 200) - 10) || ' days'),
    1, CASE WHEN n % 13 = 0 THEN '{now}' END, '{now}', '{now}'
FROM g;
ANALYZE;
"""


def migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    ghvault = Path(sys.executable).parent / "ghvault"
    subprocess.run([str(ghvault), "migrate"], cwd=ROOT, env=env, check=True)  # noqa: S603


def elapsed(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"


async def timed(run: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, float]:
    await run()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, min(seconds) * 1000


async def measure(engine: Engine[Any], repeat: int) -> list[tuple[str, float, float]]:
    async with engines.serving(engine):
        if not engines.is_sqlite(engine):
            # The fill's changes, all folded first: a server folds them as it goes.
            started, moved = time.perf_counter(), 0
            while batch := await fold_changes():
                moved += batch
            print(f"  folded {moved} count changes in {elapsed(started)}", file=sys.stderr)
        now = datetime.now(UTC)
        stats = await token_stats(now)
        total = sum(item.count for item in stats.by_state)
        print(f"  {total} rows, {stats.due_for_refresh} due", file=sys.stderr)
        return [
            ("githubTokenStats", *await timed(lambda: token_stats(now), repeat)),
            (
                "sweep candidates (limit 1000)",
                *await timed(lambda: due_candidates(now, DEFAULT_WINDOW, 1000), repeat),
            ),
        ]


async def on_sqlite(rows: int, repeat: int) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.sqlite"
        migrate(f"sqlite:///{path}")
        import sqlite3

        now = str(datetime.now(UTC).replace(microsecond=0))
        started = time.perf_counter()
        with sqlite3.connect(path) as connection:
            connection.executescript(SQLITE_FILL.format(rows=rows, now=now))
        print(f"  sqlite: {rows} rows filled in {elapsed(started)}", file=sys.stderr)
        return await measure(PooledSQLiteEngine(path=str(path)), repeat)


async def on_postgres(url: str, rows: int, repeat: int) -> list[tuple[str, float, float]]:
    name = f"ghvault_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    target = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    try:
        migrate(target)
        connection = await asyncpg.connect(target)
        started = time.perf_counter()
        try:
            await connection.execute(POSTGRES_FILL.format(rows=rows))
        finally:
            await connection.close()
        print(f"  postgres: {rows} rows filled in {elapsed(started)}", file=sys.stderr)
        return await measure(PostgresEngine(config={"dsn": target}), repeat)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"))
    args = parser.parse_args()
    results = {"sqlite": await on_sqlite(args.rows, args.repeat)}
    if args.postgres:
        results["postgres"] = await on_postgres(args.postgres, args.rows, args.repeat)
    print(f"{'engine':<10} {'query':<32} {'median ms':>10} {'best ms':>10}   ({args.rows} rows)")
    for engine, lines in results.items():
        for query, median, best in lines:
            print(f"{engine:<10} {query:<32} {median:>10.1f} {best:>10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
