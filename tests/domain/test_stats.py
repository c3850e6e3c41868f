"""githubTokenStats: counts by state and app type agree with what status reads say."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from server.config import Settings
from server.domain.enums import AppType, TokenState
from server.domain.stats import token_stats
from server.domain.status import STATUS_COLUMNS, STORED_STATES, status_from_row
from server.domain.sweep import count_due
from server.storage.tables import UserGithubAppToken as Token
from tests.helpers import ADMIN, T0, Database, GraphQLClient
from tests.seeding import seed_tokens

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
