"""The admin lists read an index in list order, on both engines, for every filter.

The query under test is the one the list builds (`list_query`), run under
EXPLAIN. The tables here are nearly empty, where PostgreSQL would rather scan
and sort; sequential scans and sorts are priced out (`enable_seqscan`,
`enable_sort`) so the plan shows whether an index *can* serve the query in
its order: a query the indexes do not fit still scans or sorts, and fails.
SQLite plans by the shape of the query and the indexes alone.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from piccolo.query.methods.select import Select
from piccolo.querystring import QueryString

from bench.token_stats import POSTGRES_FILL
from server.domain import audit, status
from server.domain.enums import AppType, AuditAction, TokenState
from server.domain.pagination import encode_cursor
from server.domain.status import TokenFilter
from server.storage import token_counts
from tests.helpers import T0, Database

NEWEST = "user_github_app_tokens_newest"
LOGIN = "user_github_app_tokens_login_newest"
REVOKED = "user_github_app_tokens_revoked_newest"
LIVE_EXPIRY = "user_github_app_tokens_live_access_expiry"
COUNT_INDEXES = {
    token_counts.REFRESHABLE_ACCESS,
    token_counts.UNREFRESHABLE_ACCESS,
    token_counts.REFRESHABLE_REFRESH,
}
EXPIRY_INDEXES = {LIVE_EXPIRY, *COUNT_INDEXES}
GITHUB_USER_INDEXES = {
    "user_github_app_tokens_github_user_id",
    "user_github_app_tokens_github_user_app_unique",
}
AUDIT_SUBJECT = "audit_events_subject_newest"
AUDIT_ACTION = "audit_events_action_newest"

TOKEN_CURSOR = encode_cursor(T0.isoformat(), str(uuid.uuid4()))
AUDIT_CURSOR = encode_cursor(1_000)


async def explain(database: Database, query: Select[Any], *, sorted_ok: bool = False) -> str:
    """The plan of `query` as text, one node or step per line.

    With `sorted_ok`, PostgreSQL may still sort (a small set of matches).
    """
    return await explain_querystring(database, query.querystrings[0], sorted_ok=sorted_ok)


async def explain_querystring(
    database: Database, querystring: QueryString, *, sorted_ok: bool = True, forced: bool = True
) -> str:
    """`forced` prices PostgreSQL's sequential scans (and, unless `sorted_ok`, sorts) out."""
    engine = database.engine
    if database.is_sqlite:
        rows = await engine.run_querystring(QueryString("EXPLAIN QUERY PLAN {}", querystring))
        return "\n".join(row["detail"] for row in rows)
    if not forced:
        rows = await engine.run_querystring(QueryString("EXPLAIN {}", querystring))
        return "\n".join(row["QUERY PLAN"] for row in rows)
    async with engine.transaction():
        await engine.run_ddl("SET LOCAL enable_seqscan = off")
        if not sorted_ok:
            await engine.run_ddl("SET LOCAL enable_sort = off")
        rows = await engine.run_querystring(QueryString("EXPLAIN {}", querystring))
    return "\n".join(row["QUERY PLAN"] for row in rows)


def assert_index_walk(plan: str, table: str, indexes: set[str], *, sorted_ok: bool = False) -> None:
    """The plan reads `table` through one of `indexes`, and (unless allowed) does not sort."""
    used = {name for name in indexes if name in plan}
    assert used, f"none of {sorted(indexes)} in the plan:\n{plan}"
    # SQLite: a full scan reads "SCAN <table>" with no index; PostgreSQL: "Seq Scan".
    assert f"SCAN {table}\n" not in plan + "\n", plan
    assert "Seq Scan" not in plan, plan
    if not sorted_ok:
        assert "TEMP B-TREE" not in plan, plan
        assert "Sort" not in plan, plan


TOKEN_CASES: dict[str, tuple[TokenFilter, set[str], bool]] = {
    # name: (filter, indexes any of which may serve it, whether a sort of its matches is fine)
    "no filter": (TokenFilter(), {NEWEST}, False),
    "app type": (TokenFilter(app_type=AppType.LITE), {NEWEST}, False),
    "login": (TokenFilter(github_login="OctoCat"), {LOGIN}, False),
    "login and app type": (
        TokenFilter(github_login="octocat", app_type=AppType.STANDARD),
        {LOGIN},
        False,
    ),
    "github user": (TokenFilter(github_user_id="42"), GITHUB_USER_INDEXES, True),
    "revoked": (TokenFilter(state=TokenState.REVOKED), {REVOKED}, False),
    "revoked lite": (
        TokenFilter(state=TokenState.REVOKED, app_type=AppType.LITE),
        {REVOKED},
        False,
    ),
    # Time-dependent states: walk the list order, or take the expired range and
    # sort only it; which is cheaper depends on how many match, so either may do,
    # through the list's expiry index or one the token counts keep (with the
    # refresh expiry in it, as EXPIRED and REFRESH_EXPIRED need).
    "active": (TokenFilter(state=TokenState.ACTIVE), {NEWEST, *EXPIRY_INDEXES}, True),
    "expired": (TokenFilter(state=TokenState.EXPIRED), {NEWEST, *EXPIRY_INDEXES}, True),
    "refresh expired": (
        TokenFilter(state=TokenState.REFRESH_EXPIRED),
        {NEWEST, *EXPIRY_INDEXES},
        True,
    ),
}


@pytest.mark.parametrize("page", ["first", "next"])
@pytest.mark.parametrize("case", list(TOKEN_CASES))
async def test_token_list_pages_read_an_index_in_list_order(
    database: Database, case: str, page: str
) -> None:
    """Make sure no token list filter, on its first or a later page, scans the table."""
    token_filter, indexes, sorted_ok = TOKEN_CASES[case]
    after = TOKEN_CURSOR if page == "next" else None
    query = status.list_query(token_filter, first=20, after=after, now=T0)
    assert query is not None
    plan = await explain(database, query, sorted_ok=sorted_ok)
    assert_index_walk(plan, "user_github_app_tokens", indexes, sorted_ok=sorted_ok)


def test_not_connected_filter_needs_no_query() -> None:
    """Make sure the NOT_CONNECTED filter (no row can match) does not touch the database."""
    query = status.list_query(
        TokenFilter(state=TokenState.NOT_CONNECTED), first=20, after=None, now=T0
    )
    assert query is None


AUDIT_CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "all": ({}, {"audit_events_pkey"}),
    "by user": ({"user_id": "alice"}, {AUDIT_SUBJECT, "audit_events_subject_user_id"}),
    "by action": ({"action": AuditAction.USER_PURGED}, {AUDIT_ACTION}),
    "by user and action": (
        {"user_id": "alice", "action": AuditAction.TOKEN_STORED},
        {AUDIT_SUBJECT, AUDIT_ACTION, "audit_events_subject_user_id"},
    ),
}


@pytest.mark.parametrize("page", ["first", "next"])
@pytest.mark.parametrize("case", list(AUDIT_CASES))
async def test_audit_list_pages_read_an_index_newest_first(
    database: Database, case: str, page: str
) -> None:
    """Make sure the audit log, whole, by user or by action, is read newest first from an index."""
    arguments, indexes = AUDIT_CASES[case]
    after = AUDIT_CURSOR if page == "next" else None
    query = audit.list_query(
        user_id=arguments.get("user_id"), action=arguments.get("action"), first=20, after=after
    )
    # By action alone, the page's ids come from the index and only they are sorted.
    by_action_alone = "action" in arguments and "user_id" not in arguments
    plan = await explain(database, query, sorted_ok=by_action_alone)
    if database.is_sqlite and not arguments:
        # The id is SQLite's rowid: the table itself is the b-tree in id order,
        # walked backwards with no sort.
        assert plan in {
            "SCAN audit_events",
            "SEARCH audit_events USING INTEGER PRIMARY KEY (rowid<?)",
        }, plan
        return
    assert_index_walk(plan, "audit_events", indexes, sorted_ok=by_action_alone)


async def fill_postgres_tokens(database: Database, rows: int) -> None:
    """`rows` tokens spread over expiries as bench/token_stats.py makes them, then
    statistics, so PostgreSQL plans as it would on a real table."""
    connection = await asyncpg.connect(database.url)
    try:
        await connection.execute(POSTGRES_FILL.format(rows=rows))
        await connection.execute("VACUUM ANALYZE user_github_app_tokens")
    finally:
        await connection.close()


async def test_token_counts_read_only_the_current_hour_from_covering_indexes(
    database: Database,
) -> None:
    """Make sure githubTokenStats reads the tokens table only as one-hour ranges of the
    count indexes (index only on PostgreSQL), never a scan of the table.

    SQLite is asked without statistics (nobody runs ANALYZE on a ghvault file);
    PostgreSQL with those of a table of 5,000 tokens, as autovacuum keeps them.
    """
    if not database.is_sqlite:
        await fill_postgres_tokens(database, 5_000)
    now = datetime.now(UTC)
    statement, *arguments = token_counts.counts_query(now, sqlite=database.is_sqlite)
    plan = await explain_querystring(database, QueryString(statement, *arguments), forced=False)
    table_lines = [line for line in plan.splitlines() if "user_github_app_tokens " in line]
    assert {name for name in COUNT_INDEXES if name in plan} == COUNT_INDEXES, plan
    if database.is_sqlite:
        # Four ranges, each on the leading expiry of its index.
        assert len(table_lines) == 4, plan
        for line in table_lines:
            assert line.startswith("SEARCH user_github_app_tokens USING INDEX "), plan
            assert "_expires_at>? AND " in line, plan
        return
    assert "Seq Scan on user_github_app_tokens " not in plan, plan
    scans = [line.strip() for line in table_lines]
    assert len(scans) == 4, plan
    assert all(line.startswith("->  Index Only Scan using ") for line in scans), plan
    # Each range bounds the index's leading column.
    for index, column in (
        (token_counts.REFRESHABLE_ACCESS, "access_token_expires_at"),
        (token_counts.UNREFRESHABLE_ACCESS, "access_token_expires_at"),
        (token_counts.REFRESHABLE_REFRESH, "refresh_token_expires_at"),
    ):
        for block in plan.split("Index Only Scan using ")[1:]:
            if block.startswith(index + " "):
                assert f"Index Cond: (({column} >= " in block, plan


def sql_literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def test_a_rare_action_reads_its_index_under_a_generic_plan(database: Database) -> None:
    """Make sure the audit log by action keeps its index once PostgreSQL caches a generic
    plan for the prepared statement (after five runs), and whatever the action's share,
    where a rare action would otherwise be found by walking the whole log newest first."""
    if database.is_sqlite:
        pytest.skip("SQLite plans each statement by its shape alone")
    connection = await asyncpg.connect(database.url)
    try:
        await connection.execute(
            "INSERT INTO audit_events (occurred_at, action, subject_user_id) "
            "SELECT now() - n * interval '1 second', "
            # 2 % purges, all among the oldest events: the planner assumes them spread.
            "CASE WHEN n <= 1000 THEN 'user_purged' ELSE 'token_stored' END, 'user-' || n "
            "FROM generate_series(1, 50000) AS n"
        )
        await connection.execute("VACUUM ANALYZE audit_events")
        for after in (None, AUDIT_CURSOR):
            query = audit.list_query(
                user_id=None, action=AuditAction.USER_PURGED, first=20, after=after
            )
            sql, args = query.querystrings[0].compile_string(engine_type="postgres")
            async with connection.transaction():
                await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await connection.execute(f"PREPARE listing AS {sql}")
                # EXECUTE takes no bound parameters: the arguments are written in.
                values = ", ".join(sql_literal(arg) for arg in args)
                execute = f"EXECUTE listing({values})" if args else "EXECUTE listing"
                rows = await connection.fetch(f"EXPLAIN {execute}")
                await connection.execute("DEALLOCATE listing")
            plan = "\n".join(row["QUERY PLAN"] for row in rows)
            assert_index_walk(plan, "audit_events", {AUDIT_ACTION}, sorted_ok=True)
            # Found in the index, not by reading the log newest first and filtering.
            assert "Filter" not in plan, plan
    finally:
        await connection.close()
