"""Token status for the frontend and the admins' token list."""

from __future__ import annotations

from datetime import datetime

import strawberry

from server.domain import status
from server.domain.enums import AppType, RevocationReason, TokenState
from server.graphql.fields import field
from server.graphql.permissions import IsAdmin
from server.graphql.types import Connection, Edge, Info


@strawberry.type
class GithubTokenStatus:
    id: strawberry.ID = strawberry.field(
        description=(
            "Stable for one user and app type, in every state (NOT_CONNECTED included), "
            "so that client caches update a status in place."
        )
    )
    user_id: strawberry.ID
    app_type: AppType
    state: TokenState
    needs_reconnect: bool = strawberry.field(
        description="True when the user must (re)connect: NOT_CONNECTED, REVOKED, REFRESH_EXPIRED."
    )
    github_user_id: str | None
    github_login: str | None
    access_token_expires_at: datetime | None
    refresh_token_expires_at: datetime | None
    revoked_at: datetime | None
    revocation_reason: RevocationReason | None
    connected_at: datetime | None
    updated_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_domain(cls, token: status.TokenStatus) -> GithubTokenStatus:
        return cls(
            id=strawberry.ID(f"{token.app_type.value}:{token.user_id}"),
            user_id=strawberry.ID(token.user_id),
            app_type=token.app_type,
            state=token.state,
            needs_reconnect=token.needs_reconnect,
            github_user_id=token.github_user_id,
            github_login=token.github_login,
            access_token_expires_at=token.access_token_expires_at,
            refresh_token_expires_at=token.refresh_token_expires_at,
            revoked_at=token.revoked_at,
            revocation_reason=token.revocation_reason,
            connected_at=token.connected_at,
            updated_at=token.updated_at,
            last_used_at=token.last_used_at,
        )


async def token_statuses(user_id: str, info: Info) -> list[GithubTokenStatus]:
    """One status per app type, NOT_CONNECTED included."""
    statuses = await status.token_statuses(user_id, info.context.now())
    return [GithubTokenStatus.from_domain(token) for token in statuses]


@strawberry.type
class GithubTokenEdge(Edge[GithubTokenStatus]):
    pass


@strawberry.type
class GithubTokenConnection(Connection[GithubTokenEdge]):
    pass


@strawberry.input(
    description=(
        "States that are derived (ACTIVE, EXPIRED, REFRESH_EXPIRED, REVOKED) filter\n"
        "stored rows; NOT_CONNECTED matches nothing here."
    )
)
class GithubTokenFilter:
    app_type: AppType | None = strawberry.UNSET
    state: TokenState | None = strawberry.UNSET
    github_login: str | None = strawberry.UNSET
    github_user_id: str | None = strawberry.UNSET

    def to_domain(self) -> status.TokenFilter:
        return status.TokenFilter(
            app_type=self.app_type or None,
            state=self.state or None,
            github_login=self.github_login or None,
            github_user_id=self.github_user_id or None,
        )


@strawberry.type
class Query:
    @field(description="ADMIN. Newest first. `first` is 1..100.", permission_classes=[IsAdmin])
    async def github_tokens(
        self,
        info: Info,
        filter: GithubTokenFilter | None = strawberry.UNSET,
        first: int = 50,
        after: str | None = strawberry.UNSET,
    ) -> GithubTokenConnection:
        token_filter = filter.to_domain() if filter else status.TokenFilter()
        page = await status.list_statuses(
            token_filter, first=first, after=after or None, now=info.context.now()
        )
        return GithubTokenConnection.from_page(
            page, edge=GithubTokenEdge, node=GithubTokenStatus.from_domain
        )
