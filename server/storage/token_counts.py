"""How many live tokens have each kept instant at or before `now`, per app type.

The counts are kept by triggers (migration 2026-11-30T16:00:00, whose
docstring defines the series) per hour of the instant. A count at `now` is
the kept counts of the hours before now's hour plus the rows whose instant
falls in now's hour up to `now`, counted in the table by a range of one
hour on a covering index. The rows in that hour are compared with `now`
exactly as the state conditions compare them (`status.state_condition`,
`sweep.due_condition`), so the counts agree with them at every instant.
One statement reads it all, so the parts see one snapshot of the database.

On PostgreSQL the triggers append changes instead of updating shared rows;
a read adds them in, after folding them into the counts when no other
reader is doing so (`fold_changes`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from server.domain.enums import AppType
from server.storage.engines import current_engine, is_sqlite
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import write_transaction

TOKENS = Token._meta.tablename
COUNTS = "user_github_app_token_counts"
CHANGES = "user_github_app_token_count_changes"

# The window the `due_from` series was kept for (the migration's DUE_WINDOW_HOURS).
KEPT_DUE_WINDOW = timedelta(hours=720)

SERIES = (
    "live",
    "revoked",
    "access_expired",
    "refresh_expired",
    "due_from",
    "refresh_lapsed",
)

_HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Changes one read folds at most (about a second's work on PostgreSQL here).
FOLD_BATCH = 100_000
# pg_try_advisory_xact_lock key of the fold: one folder at a time, the others just read.
FOLD_LOCK = 0x6768_7661_756C_7401

_REFRESHABLE = "revoked_at IS NULL AND refresh_token_encrypted IS NOT NULL"
_UNREFRESHABLE = "revoked_at IS NULL AND refresh_token_encrypted IS NULL"
_ACCESS = "access_token_expires_at"
_REFRESH = "refresh_token_expires_at"


# The indexes of the hour ranges (migration 2026-11-30T16:00:00).
REFRESHABLE_ACCESS = "user_github_app_tokens_refreshable_access"
UNREFRESHABLE_ACCESS = "user_github_app_tokens_unrefreshable_access"
REFRESHABLE_REFRESH = "user_github_app_tokens_refreshable_refresh"


def _kept(*, sqlite: bool) -> str:
    kept = f"SELECT series, github_app_type, bucket, n FROM {COUNTS}"  # noqa: S608 -- fixed name
    if not sqlite:
        kept += f" UNION ALL SELECT series, github_app_type, bucket, n FROM {CHANGES}"  # noqa: S608
    return kept


def _tokens(index: str, *, sqlite: bool) -> str:
    """The tokens table, read through `index`.

    SQLite's planner, without statistics (a database nobody ran ANALYZE on),
    would take the older access-expiry index, which holds neither the refresh
    expiry nor the app type: every row of the hour would then be looked up in
    the table. Through these indexes SQLite never reads the table row, since
    the partial index's own condition needs no check. PostgreSQL picks them by
    itself (index-only scans).
    """
    return f"{TOKENS} INDEXED BY {index}" if sqlite else TOKENS


def _statement(*, sqlite: bool) -> str:
    """Rows (part, app type, c1, c2, c3); the placeholders are filled by `_arguments`.

    Parts: each series' kept count before now's hour (c1), and four counts of
    rows in now's hour, each one index range:
    - `access_hour`, refreshable rows whose access expiry is in [hour, now]:
      all (c1), those with the refresh expiry <= now too (c2), and those whose
      refresh expiry minus the window is not before the hour (c3);
    - `unrefreshable_access_hour`: the same range, rows without a refresh token;
    - `refresh_hour`, refreshable rows whose refresh expiry is in [hour, now]:
      all (c1), those whose access expiry is before the hour (c2);
    - `due_hour`, refreshable rows whose refresh expiry minus the window is in
      [hour, now] and whose access expiry is not in [hour, now] (not counted above).
    """
    return f"""
        SELECT series AS part, github_app_type AS app, CAST(SUM(n) AS BIGINT) AS c1,
               0 AS c2, 0 AS c3
        FROM ({_kept(sqlite=sqlite)}) AS kept
        WHERE bucket < {{}} OR series IN ('live', 'revoked')
        GROUP BY series, github_app_type
        UNION ALL
        SELECT 'access_hour', github_app_type, COUNT(*),
               SUM(CASE WHEN {_REFRESH} <= {{}} THEN 1 ELSE 0 END),
               SUM(CASE WHEN {_REFRESH} IS NULL OR {_REFRESH} >= {{}} THEN 1 ELSE 0 END)
        FROM {_tokens(REFRESHABLE_ACCESS, sqlite=sqlite)}
        WHERE {_REFRESHABLE} AND {_ACCESS} >= {{}} AND {_ACCESS} <= {{}}
        GROUP BY github_app_type
        UNION ALL
        SELECT 'unrefreshable_access_hour', github_app_type, COUNT(*), 0, 0
        FROM {_tokens(UNREFRESHABLE_ACCESS, sqlite=sqlite)}
        WHERE {_UNREFRESHABLE} AND {_ACCESS} >= {{}} AND {_ACCESS} <= {{}}
        GROUP BY github_app_type
        UNION ALL
        SELECT 'refresh_hour', github_app_type, COUNT(*),
               SUM(CASE WHEN {_ACCESS} < {{}} THEN 1 ELSE 0 END), 0
        FROM {_tokens(REFRESHABLE_REFRESH, sqlite=sqlite)}
        WHERE {_REFRESHABLE} AND {_REFRESH} >= {{}} AND {_REFRESH} <= {{}}
        GROUP BY github_app_type
        UNION ALL
        SELECT 'due_hour', github_app_type, COUNT(*), 0, 0
        FROM {_tokens(REFRESHABLE_REFRESH, sqlite=sqlite)}
        WHERE {_REFRESHABLE} AND {_REFRESH} >= {{}} AND {_REFRESH} <= {{}}
          AND ({_ACCESS} IS NULL OR {_ACCESS} > {{}})
        GROUP BY github_app_type
    """  # noqa: S608 -- fixed names; every value is a parameter


def hour_of(now: datetime) -> int:
    """Whole hours since the epoch, rounded down, as the triggers compute them."""
    return (now - _EPOCH) // _HOUR


def _arguments(now: datetime) -> list[Any]:
    hour = hour_of(now)
    start = _EPOCH + hour * _HOUR
    window = KEPT_DUE_WINDOW
    return [
        hour,
        *(now, start + window, start, now),  # access_hour
        *(start, now),  # unrefreshable_access_hour
        *(start, start, now),  # refresh_hour
        *(start + window, now + window, now),  # due_hour
    ]


def counts_query(now: datetime, *, sqlite: bool) -> tuple[Any, ...]:
    """The statement and its arguments (for `Table.raw` or a `QueryString`)."""
    return (_statement(sqlite=sqlite), *_arguments(now))


async def fold_changes(batch: int = FOLD_BATCH) -> int:
    """Move up to `batch` of PostgreSQL's appended changes into the counts, unless another
    reader is at it; how many moved.

    A read adds the changes in either way: folding only keeps them few. The
    batch bounds what one read spends on it after many writes went unread.
    """
    async with write_transaction():
        rows = await Token.raw("SELECT pg_try_advisory_xact_lock({}) AS got", FOLD_LOCK)
        if not rows[0]["got"]:
            return 0
        moved = await Token.raw(
            f"WITH moved AS (DELETE FROM {CHANGES} WHERE ctid = ANY(ARRAY("  # noqa: S608 -- fixed names
            f"SELECT ctid FROM {CHANGES} LIMIT {{}})) "
            "RETURNING series, github_app_type, bucket, n), "
            f"folded AS (INSERT INTO {COUNTS} (series, github_app_type, bucket, n) "
            "SELECT series, github_app_type, bucket, SUM(n) FROM moved "
            "GROUP BY series, github_app_type, bucket HAVING SUM(n) <> 0 "
            "ORDER BY series, github_app_type, bucket "
            "ON CONFLICT (series, github_app_type, bucket) "
            f"DO UPDATE SET n = {COUNTS}.n + excluded.n) "
            "SELECT COUNT(*) AS moved FROM moved",
            batch,
        )
        await Token.raw(f"DELETE FROM {COUNTS} WHERE n = 0")  # noqa: S608 -- fixed name
    count: int = moved[0]["moved"]
    return count


async def counts_at(now: datetime) -> dict[AppType, dict[str, int]]:
    """{app type: {series: how many rows of the series have their instant at or before
    `now`}}; `live` and `revoked` are plain totals."""
    sqlite = is_sqlite(current_engine())
    if not sqlite:
        await fold_changes()
    rows = await Token.raw(*counts_query(now, sqlite=sqlite))
    parts: dict[tuple[str, AppType], tuple[int, int, int]] = defaultdict(lambda: (0, 0, 0))
    for row in rows:
        parts[row["part"], AppType(row["app"])] = (row["c1"], row["c2"], row["c3"])
    counts = {}
    for app_type in AppType:
        kept = {series: parts[series, app_type][0] for series in SERIES}
        access, refresh = parts["access_hour", app_type], parts["refresh_hour", app_type]
        unrefreshable = parts["unrefreshable_access_hour", app_type][0]
        due = parts["due_hour", app_type][0]
        counts[app_type] = {
            "live": kept["live"],
            "revoked": kept["revoked"],
            "access_expired": kept["access_expired"] + access[0] + unrefreshable,
            "refresh_expired": kept["refresh_expired"] + access[1] + refresh[1] + unrefreshable,
            "due_from": kept["due_from"] + access[2] + due,
            "refresh_lapsed": kept["refresh_lapsed"] + refresh[0],
        }
    return counts
