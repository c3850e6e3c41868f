"""Query resolvers: each checks its principal and calls one domain function."""

from __future__ import annotations

import strawberry

from server.domain import audit, status, users
from server.domain.enums import AuditAction, Role
from server.graphql.permissions import IsAdmin, IsAuthenticated, require_principal
from server.graphql.types import (
    AuditEventConnection,
    GithubTokenConnection,
    GithubTokenFilter,
    Info,
    User,
    Viewer,
)


@strawberry.type
class Query:
    @strawberry.field(
        description="Any authenticated principal.", permission_classes=[IsAuthenticated]
    )
    async def viewer(self, info: Info) -> Viewer:
        principal = require_principal(info)
        if principal.role is Role.USER:
            await info.context.ensure_user(principal)
        return Viewer(id=strawberry.ID(principal.id), role=principal.role)

    @strawberry.field(
        description="ADMIN. Null when there is no such user.", permission_classes=[IsAdmin]
    )
    async def user(self, id: strawberry.ID) -> User | None:
        user = await users.get_user(id)
        return User.from_domain(user) if user else None

    @strawberry.field(
        description="ADMIN. Newest first. `first` is 1..100.", permission_classes=[IsAdmin]
    )
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
        return GithubTokenConnection.from_page(page)

    @strawberry.field(
        description="ADMIN. Newest first. `first` is 1..100.", permission_classes=[IsAdmin]
    )
    async def audit_events(
        self,
        user_id: strawberry.ID | None = strawberry.UNSET,
        action: AuditAction | None = strawberry.UNSET,
        first: int = 50,
        after: str | None = strawberry.UNSET,
    ) -> AuditEventConnection:
        page = await audit.list_events(
            user_id=user_id or None, action=action or None, first=first, after=after or None
        )
        return AuditEventConnection.from_page(page)
