"""githubTokenStats (ADMIN): how many tokens are in each state, and how many are due."""

from __future__ import annotations

import strawberry

from server.domain import stats
from server.domain.enums import AppType, TokenState
from server.graphql.fields import field
from server.graphql.permissions import IsAdmin
from server.graphql.types import Info


@strawberry.type(description="How many stored tokens of one app type are in one state.")
class GithubTokenStateCount:
    state: TokenState
    app_type: AppType
    count: int


@strawberry.type(description="Counts over every stored token, at the time of the request.")
class GithubTokenStats:
    by_state: list[GithubTokenStateCount] = strawberry.field(
        description="Every stored state (not NOT_CONNECTED) for every app type, zeros included."
    )
    due_for_refresh: int = strawberry.field(description="Live tokens a sweep would refresh now.")

    @classmethod
    def from_domain(cls, result: stats.TokenStats) -> GithubTokenStats:
        return cls(
            by_state=[
                GithubTokenStateCount(state=item.state, app_type=item.app_type, count=item.count)
                for item in result.by_state
            ],
            due_for_refresh=result.due_for_refresh,
        )


@strawberry.type
class Query:
    @field(
        description="ADMIN. Token counts by state and app type; one pass over the table.",
        permission_classes=[IsAdmin],
    )
    async def github_token_stats(self, info: Info) -> GithubTokenStats:
        return GithubTokenStats.from_domain(await stats.token_stats(info.context.now()))
