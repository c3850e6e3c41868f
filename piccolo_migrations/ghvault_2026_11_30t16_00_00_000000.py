"""Token counts kept by triggers, so githubTokenStats need not count a million rows.

A token's state depends on the time, but only through comparisons of its
expiries with `now`. Each state count is a sum of "how many live rows have
some instant x <= now", for four instants per row (the series below). The
triggers keep, per (series, app type, hour of x), how many rows there are;
a count at `now` is then the kept counts of the hours before now's hour
plus the rows whose x falls in now's hour itself, counted exactly in the
table through the covering indexes made here (a range of one hour).

Series, over tokens not revoked (plus the totals `live` and `revoked`):

- `access_expired`: the access expiry. ACTIVE is live minus these.
- `refresh_expired`: when the row becomes REFRESH_EXPIRED: the access expiry
  when there is no refresh token, else the later of the two expiries.
- `due_from`: when a sweep starts to refresh it (refreshable rows only): the
  earlier of the access expiry and the refresh expiry minus the sweep's
  30-day window.
- `refresh_lapsed`: when it stops (refreshable rows only): the refresh expiry.

Hours are whole hours since the epoch (UTC), so the window shifts an hour
by exactly 720. On SQLite the counts are updated in place: writes are
serialized there anyway. On PostgreSQL concurrent writers must not queue
on (or deadlock over) shared count rows, a refresh above all, whose new
tokens must be stored: the triggers append their changes to
`user_github_app_token_count_changes`, which readers add in and fold into
the counts as they go (server/storage/token_counts.py); inserts and deletes
are counted per statement, so a bulk load appends a few hundred changes. A
TRUNCATE of the tokens empties both.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from server.storage.ddl import migrating_sqlite, run_ddl

ID = "2026-11-30T16:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Token counts per state kept by triggers; covering indexes for the current hour"

TOKENS = "user_github_app_tokens"
COUNTS = "user_github_app_token_counts"
CHANGES = "user_github_app_token_count_changes"
# The sweep's default window (server/domain/sweep.py DEFAULT_WINDOW), in hours.
DUE_WINDOW_HOURS = 720

LIVE = "revoked_at IS NULL"
REFRESHABLE = f"{LIVE} AND refresh_token_encrypted IS NOT NULL"
UNREFRESHABLE = f"{LIVE} AND refresh_token_encrypted IS NULL"

# name -> what it indexes; each serves the count of one hour's range, index only.
INDEXES = {
    "user_github_app_tokens_refreshable_access": (
        f"(access_token_expires_at, refresh_token_expires_at, github_app_type) WHERE {REFRESHABLE}"
    ),
    "user_github_app_tokens_refreshable_refresh": (
        f"(refresh_token_expires_at, access_token_expires_at, github_app_type) WHERE {REFRESHABLE}"
    ),
    "user_github_app_tokens_unrefreshable_access": (
        f"(access_token_expires_at, github_app_type) WHERE {UNREFRESHABLE}"
    ),
}

# What a count depends on, of a row {}: an update changing none of it changes no count.
COUNTED = (
    "{}.github_app_type",
    "{}.revoked_at",
    "{}.access_token_expires_at",
    "{}.refresh_token_expires_at",
    "{}.refresh_token_encrypted IS NULL",
)


# The hour of PostgreSQL's '-infinity': before every instant, and still a bigint
# after the window is subtracted.
BEFORE_ALL_HOURS = -(10**12)


def _hour(column: str) -> str:
    """Whole hours since the epoch, rounded down, of a timestamp (NULL stays NULL).

    PostgreSQL's 'infinity' (after every instant) is NULL as well: like a
    missing expiry, it is never at or before `now`.
    """
    if migrating_sqlite():
        seconds = f"CAST(strftime('%s', {column}) AS INTEGER)"
        # SQLite's integer division truncates towards zero: step down before 1970.
        return f"({seconds} / 3600 - ({seconds} % 3600 < 0))"
    return (
        f"CASE WHEN {column} = '-infinity' THEN {BEFORE_ALL_HOURS} "
        f"WHEN isfinite({column}) THEN floor(extract(epoch FROM {column}) / 3600)::bigint END"
    )


def _row(sign: int, *, record: str = "", table: str | None = None) -> str:
    """Token rows as (app, live, refreshable, access hour, refresh hour, sign): the trigger's
    `record` (NEW or OLD) or every row of `table`."""
    prefix = f"{record}." if record else ""
    source = f" FROM {table}" if table else ""
    return (
        f"SELECT {prefix}github_app_type AS app, {prefix}revoked_at IS NULL AS live, "
        f"{prefix}refresh_token_encrypted IS NOT NULL AS refreshable, "
        f"{_hour(prefix + 'access_token_expires_at')} AS access_hour, "
        f"{_hour(prefix + 'refresh_token_expires_at')} AS refresh_hour, {sign} AS d{source}"
    )


_W = DUE_WINDOW_HOURS
# series -> its hour for a row v; NULL where the row is not in the series.
SERIES = {
    "live": "CASE WHEN v.live THEN 0 END",
    "revoked": "CASE WHEN NOT v.live THEN 0 END",
    "access_expired": "CASE WHEN v.live THEN v.access_hour END",
    "refresh_expired": (
        "CASE WHEN NOT v.live THEN NULL WHEN NOT v.refreshable THEN v.access_hour "
        "WHEN v.access_hour >= v.refresh_hour THEN v.access_hour "
        "WHEN v.refresh_hour > v.access_hour THEN v.refresh_hour END"
    ),
    "due_from": (
        "CASE WHEN NOT (v.live AND v.refreshable) THEN NULL "
        f"WHEN v.access_hour IS NULL THEN v.refresh_hour - {_W} "
        "WHEN v.refresh_hour IS NULL THEN v.access_hour "
        f"WHEN v.access_hour <= v.refresh_hour - {_W} THEN v.access_hour "
        f"ELSE v.refresh_hour - {_W} END"
    ),
    "refresh_lapsed": "CASE WHEN v.live AND v.refreshable THEN v.refresh_hour END",
}


def _count_rows(rows: list[str], into: str, *, upsert: bool) -> str:
    """INSERT the counts of `rows` (signed) per series, app type and hour into `into`."""
    source = " UNION ALL ".join(rows)
    names = " UNION ALL ".join(f"SELECT '{name}' AS name" for name in SERIES)
    hour = " ".join(f"WHEN '{name}' THEN {when}" for name, when in SERIES.items())
    # SQLite reads `ON CONFLICT` after a SELECT as a join constraint unless a WHERE comes first.
    statement = (
        f"INSERT INTO {into} (series, github_app_type, bucket, n) "  # noqa: S608 -- fixed SQL
        f"SELECT s.series, s.app, s.bucket, SUM(s.d) FROM (SELECT series.name AS series, "
        f"v.app AS app, CASE series.name {hour} END AS bucket, v.d AS d "
        f"FROM ({source}) AS v CROSS JOIN ({names}) AS series) AS s "
        "WHERE s.bucket IS NOT NULL GROUP BY s.series, s.app, s.bucket HAVING SUM(s.d) <> 0"
    )
    if upsert:
        statement += (
            " ON CONFLICT (series, github_app_type, bucket) DO UPDATE SET n = n + excluded.n"
        )
    return statement


def _counts_table(name: str, *, keyed: bool) -> str:
    key = ", PRIMARY KEY (series, github_app_type, bucket)" if keyed else ""
    return (
        f"CREATE TABLE {name} (series TEXT NOT NULL, github_app_type TEXT NOT NULL, "
        f"bucket BIGINT NOT NULL, n BIGINT NOT NULL{key})"
    )


def _changed(old: str, new: str) -> str:
    distinct = "IS NOT" if migrating_sqlite() else "IS DISTINCT FROM"
    return " OR ".join(f"({what.format(old)}) {distinct} ({what.format(new)})" for what in COUNTED)


def _sqlite_statements() -> list[str]:
    drop_empty = f"DELETE FROM {COUNTS} WHERE n = 0"  # noqa: S608 -- fixed name
    bodies = {
        "insert": ([_row(1, record="NEW")], "AFTER INSERT", ""),
        "delete": ([_row(-1, record="OLD")], "AFTER DELETE", ""),
        "update": (
            [_row(-1, record="OLD"), _row(1, record="NEW")],
            "AFTER UPDATE",
            f" WHEN {_changed('OLD', 'NEW')}",
        ),
    }
    return [
        f"CREATE TRIGGER {TOKENS}_count_{name} {event} ON {TOKENS} FOR EACH ROW{when} "
        f"BEGIN {_count_rows(rows, COUNTS, upsert=True)}; "
        + (f"{drop_empty}; " if name != "insert" else "")
        + "END"
        for name, (rows, event, when) in bodies.items()
    ]


def _postgres_statements() -> list[str]:
    # Inserts and deletes are counted per statement, from its transition table: a bulk
    # load appends a few hundred changes, not several per row. Updates are counted per
    # row, so that one changing no counted column (every checkout's) costs nothing.
    insert = _count_rows([_row(1, table="inserted")], CHANGES, upsert=False)
    delete = _count_rows([_row(-1, table="deleted")], CHANGES, upsert=False)
    update = _count_rows([_row(-1, record="OLD"), _row(1, record="NEW")], CHANGES, upsert=False)
    return [
        _counts_table(CHANGES, keyed=False),
        # Rows come and go all the time: vacuum it by dead rows, not by its size.
        f"ALTER TABLE {CHANGES} SET (autovacuum_vacuum_scale_factor = 0, "
        "autovacuum_vacuum_threshold = 10000)",
        f"""
        CREATE FUNCTION ghvault_count_token_change() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {insert};
            ELSIF TG_OP = 'DELETE' THEN
                {delete};
            ELSE
                {update};
            END IF;
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """,
        f"""
        CREATE FUNCTION ghvault_count_token_truncate() RETURNS trigger AS $$
        BEGIN
            TRUNCATE {COUNTS}, {CHANGES};
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """,
        f"CREATE TRIGGER {TOKENS}_count_insert AFTER INSERT ON {TOKENS} "
        "REFERENCING NEW TABLE AS inserted "
        "FOR EACH STATEMENT EXECUTE FUNCTION ghvault_count_token_change()",
        f"CREATE TRIGGER {TOKENS}_count_delete AFTER DELETE ON {TOKENS} "
        "REFERENCING OLD TABLE AS deleted "
        "FOR EACH STATEMENT EXECUTE FUNCTION ghvault_count_token_change()",
        f"CREATE TRIGGER {TOKENS}_count_update AFTER UPDATE ON {TOKENS} FOR EACH ROW "
        f"WHEN ({_changed('OLD', 'NEW')}) EXECUTE FUNCTION ghvault_count_token_change()",
        f"CREATE TRIGGER {TOKENS}_count_truncate AFTER TRUNCATE ON {TOKENS} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ghvault_count_token_truncate()",
    ]


def _forwards_statements() -> list[str]:
    indexes = [f"CREATE INDEX {name} ON {TOKENS} {what}" for name, what in INDEXES.items()]
    counts = [
        _counts_table(COUNTS, keyed=True),
        # Emptied counts are deleted (SQLite at once, PostgreSQL when folding changes in).
        f"CREATE INDEX {COUNTS}_empty ON {COUNTS} (series) WHERE n = 0",
        # The rows already there, counted once; the triggers keep it up from here.
        _count_rows([_row(1, table=TOKENS)], COUNTS, upsert=False),
    ]
    triggers = _sqlite_statements() if migrating_sqlite() else _postgres_statements()
    return [*indexes, *counts, *triggers]


def _backwards_statements() -> list[str]:
    if migrating_sqlite():
        triggers = [
            f"DROP TRIGGER IF EXISTS {TOKENS}_count_{name}"
            for name in ("insert", "delete", "update")
        ]
    else:
        triggers = [
            *(
                f"DROP TRIGGER IF EXISTS {TOKENS}_count_{name} ON {TOKENS}"
                for name in ("insert", "delete", "update", "truncate")
            ),
            "DROP FUNCTION IF EXISTS ghvault_count_token_change()",
            "DROP FUNCTION IF EXISTS ghvault_count_token_truncate()",
            f"DROP TABLE IF EXISTS {CHANGES}",
        ]
    return [
        *triggers,
        f"DROP TABLE IF EXISTS {COUNTS}",
        *(f"DROP INDEX IF EXISTS {name}" for name in INDEXES),
    ]


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="ghvault", description=DESCRIPTION)

    async def add_counts() -> None:
        await run_ddl(_forwards_statements())

    async def drop_counts() -> None:
        await run_ddl(_backwards_statements())

    manager.add_raw(add_counts)
    manager.add_raw_backwards(drop_counts)

    return manager
