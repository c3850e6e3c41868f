"""githubTokenStats: counts by state and app type agree with what status reads say.

The counts come from counts kept by triggers plus the rows of the current
hour (server/storage/token_counts.py); the tests here compare them with
`derive_state` and `is_due` applied to every row in Python, at every instant
where some row changes state, a microsecond either side, and the starts of
those hours, after each kind of write.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from server.config import Settings
from server.domain.enums import AppType, TokenState
from server.domain.stats import token_stats
from server.domain.status import STATUS_COLUMNS, STORED_STATES, count_by_state, status_from_row
from server.domain.sweep import DEFAULT_WINDOW, count_due, due_condition, is_due
from server.storage.tables import User
from server.storage.tables import UserGithubAppToken as Token
from tests.fake_github import FakeGitHub
from tests.helpers import (
    ADMIN,
    MICROSECOND,
    PURGE,
    REVOKE,
    SERVICE,
    STORE,
    T0,
    Database,
    GraphQLClient,
    MovableClock,
    assert_stats_agree_with_rows,
    boundary_instants,
    insert_varied_tokens,
    store_input,
)
from tests.seeding import seed_tokens

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
EXPIRIES = (Token.access_token_expires_at, Token.refresh_token_expires_at)


CHECKOUT = """
mutation Checkout($userId: ID!) {
  checkoutGithubToken(userId: $userId, appType: STANDARD) {
    __typename
    ... on CheckoutSuccess { refreshed }
    ... on OperationError { code message }
  }
}
"""

STATS = """
{ githubTokenStats { dueForRefresh byState { state appType count } } }
"""


async def _seed_every_state(settings: Settings) -> None:
    await seed_tokens(
        settings.keyring,
        now=T0,
        count=23,
        expiries=[
            (timedelta(hours=8), timedelta(days=150)),  # ACTIVE
            (timedelta(hours=8), timedelta(days=10)),  # ACTIVE, due
            (-timedelta(hours=1), timedelta(days=150)),  # EXPIRED, due
            (-timedelta(hours=1), -timedelta(days=1)),  # REFRESH_EXPIRED
        ],
    )
    revoked = await Token.select(Token.id).limit(5)
    await Token.update({Token.revoked_at: T0}).where(Token.id.is_in([row["id"] for row in revoked]))
    await Token.update({Token.github_app_type: "lite"}).where(Token.user_id.like("user0001%"))


async def test_stats_match_the_states_status_reads_derive(
    database: Database, settings: Settings
) -> None:
    """Each count equals the number of rows whose derived state and app type match."""
    await _seed_every_state(settings)

    stats = await token_stats(T0)

    expected = Counter(
        (status.state, status.app_type)
        for status in (status_from_row(row, T0) for row in await Token.select(*STATUS_COLUMNS))
    )
    assert {(item.state, item.app_type): item.count for item in stats.by_state} == {
        (state, app_type): expected[(state, app_type)]
        for state in STORED_STATES
        for app_type in AppType
    }
    assert sum(item.count for item in stats.by_state) == 23
    assert {state for (state, _), n in expected.items() if n} == set(STORED_STATES)
    assert stats.due_for_refresh == await count_due(T0) > 0


async def test_an_empty_vault_has_all_zero_stats(database: Database) -> None:
    stats = await token_stats(T0)
    assert [item.count for item in stats.by_state] == [0] * 8
    assert stats.due_for_refresh == 0


async def test_admin_reads_stats_over_graphql(
    gql: GraphQLClient, database: Database, settings: Settings
) -> None:
    """The API answers every (state, app type) pair; the counts are the domain's."""
    await _seed_every_state(settings)

    data = (await gql.data(STATS, auth=ADMIN))["githubTokenStats"]

    domain = await token_stats(T0)
    assert data["dueForRefresh"] == domain.due_for_refresh
    assert data["byState"] == [
        {"state": item.state.name, "appType": item.app_type.name, "count": item.count}
        for item in domain.by_state
    ]
    assert TokenState.NOT_CONNECTED.name not in {item["state"] for item in data["byState"]}


async def test_stats_agree_with_every_row_after_inserts_updates_and_deletes(
    database: Database,
) -> None:
    """Make sure the counts equal a per-row derivation at every boundary instant, NULL
    expiries and missing refresh tokens included, however the rows were written."""
    assert await insert_varied_tokens() == 240
    assert await assert_stats_agree_with_rows() > 40

    # Updates: expiries moved within their hour, to another hour, to and from NULL;
    # refresh tokens erased and restored; rows revoked and un-revoked; app type changed.
    for row in await Token.select(Token.id, Token.user_id, *EXPIRIES).where(
        Token.user_id.like("varied0%") | Token.user_id.like("varied1%")
    ):
        access, refresh = row["access_token_expires_at"], row["refresh_token_expires_at"]
        if row["user_id"].startswith("varied0") and access is not None:
            await Token.update({Token.access_token_expires_at: access + 7 * MINUTE}).where(
                Token.id == row["id"]
            )
        if row["user_id"].startswith("varied1") and refresh is not None:
            await Token.update({Token.refresh_token_expires_at: refresh - 3 * HOUR}).where(
                Token.id == row["id"]
            )
    await Token.update({Token.access_token_expires_at: None}).where(Token.user_id.like("%7"))
    await Token.update({Token.refresh_token_expires_at: T0 + HOUR}).where(
        Token.refresh_token_expires_at.is_null() & Token.user_id.like("%3")
    )
    await Token.update({Token.refresh_token_encrypted: None}).where(Token.user_id.like("%5"))
    await Token.update({Token.refresh_token_encrypted: "v1:opaque"}).where(Token.user_id.like("%6"))
    await Token.update({Token.revoked_at: T0}).where(Token.user_id.like("%1"))
    await Token.update({Token.revoked_at: None}).where(Token.user_id.like("%2"))
    await Token.update({Token.github_app_type: AppType.LITE.value}).where(
        Token.user_id.like("varied2%")
    )
    # A checkout's note of use changes no count.
    await Token.update({Token.last_used_at: T0}).where(Token.user_id.like("%4"))
    # One statement inserting a row and updating another (an upsert).
    await User.insert(User(id="upserted"))
    await Token.insert(
        *(
            Token(
                user_id=user_id,
                github_app_type=AppType.STANDARD.value,
                github_user_id=f"upsert-{user_id}",
                github_login="upserted",
                access_token_expires_at=T0 + 2 * MINUTE,
                refresh_token_encrypted="v1:opaque",
                refresh_token_expires_at=T0 + DEFAULT_WINDOW - MINUTE,
            )
            for user_id in ("upserted", "varied000")
        )
    ).on_conflict(
        target=(Token.user_id, Token.github_app_type),
        action="DO UPDATE",
        values=[Token.access_token_expires_at, Token.refresh_token_expires_at],
    )
    await assert_stats_agree_with_rows()

    await Token.delete().where(Token.user_id.like("%8") | Token.user_id.like("varied3%"))
    await assert_stats_agree_with_rows()

    await Token.delete(force=True)
    stats = await token_stats(T0)
    assert [item.count for item in stats.by_state] == [0] * 8
    assert stats.due_for_refresh == 0


async def test_stats_agree_with_every_row_through_the_write_paths(
    gql: GraphQLClient, settings: Settings, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure store, refresh (checkout), revoke, store again and purge, as the API makes
    them, leave counts that equal a per-row derivation at every boundary instant."""
    seeded = await seed_tokens(
        settings.keyring,
        now=T0,
        count=6,
        expiries=[(-HOUR, timedelta(days=150)), (HOUR, timedelta(days=20))],
        fake=fake_github,
    )
    for index in range(4):
        result = await gql.data(
            STORE,
            store_input(f"stored{index}", now=T0, github_user_id=str(900 + index)),
            auth=SERVICE,
        )
        assert result["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
    await assert_stats_agree_with_rows()

    clock.advance(17 * MINUTE + 3 * MICROSECOND)
    refreshed = [
        (await gql.data(CHECKOUT, {"userId": token.user_id}, auth=SERVICE))["checkoutGithubToken"]
        for token in seeded[::2]
    ]
    assert [result.get("refreshed") for result in refreshed] == [True, True, True]
    await assert_stats_agree_with_rows()

    for user_id in (seeded[1].user_id, "stored0", "stored1"):
        result = await gql.data(
            REVOKE, {"input": {"userId": user_id, "appType": "STANDARD"}}, auth=ADMIN
        )
        assert result["revokeToken"]["__typename"] == "RevokeTokenSuccess"
    await assert_stats_agree_with_rows()

    again = await gql.data(
        STORE, store_input("stored0", now=clock(), github_user_id="900"), auth=SERVICE
    )
    assert again["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"
    await assert_stats_agree_with_rows()

    for user_id in (seeded[0].user_id, "stored1", "stored2"):
        result = await gql.data(PURGE, {"userId": user_id}, auth=ADMIN)
        assert result["purgeUser"]["__typename"] == "PurgeUserSuccess"
    assert await Token.count() == 7
    await assert_stats_agree_with_rows()


async def test_due_for_another_window_is_counted_in_the_table(database: Database) -> None:
    """Make sure a window other than the kept one still counts exactly (by the plain query)."""
    await insert_varied_tokens()
    rows = await Token.select(*STATUS_COLUMNS, Token.refresh_token_encrypted)
    week = timedelta(days=7)
    for now in sorted(boundary_instants(rows, week))[::5]:
        assert await count_due(now, week) == sum(is_due(row, now, week) for row in rows), now
        assert await count_due(now, week) == await Token.count().where(due_condition(now, week))


async def test_the_metric_and_the_stats_count_alike(database: Database) -> None:
    """Make sure the token gauge's counts (count_by_state) are githubTokenStats' counts."""
    await insert_varied_tokens()
    for now in (T0 - MICROSECOND, T0, T0 + 8 * HOUR):
        stats = await token_stats(now)
        assert await count_by_state(now) == {
            (item.app_type, item.state): item.count for item in stats.by_state
        }
        assert await count_due(now) == stats.due_for_refresh
