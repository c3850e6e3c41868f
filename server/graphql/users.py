"""Who is asking (`viewer`) and, for admins, any user by id."""

from __future__ import annotations

from datetime import datetime

import strawberry

from server.domain import status, users
from server.domain.enums import AppType, Role
from server.graphql.fields import field
from server.graphql.permissions import IsAdmin, IsAuthenticated, require_principal
from server.graphql.status import GithubTokenStatus, token_statuses
from server.graphql.types import Info


@strawberry.type
class User:
    id: strawberry.ID
    email: str | None = strawberry.field(description="Null once the user is purged.")
    display_name: str | None = strawberry.field(description="Null once the user is purged.")
    created_at: datetime
    purged_at: datetime | None

    @field(description="One entry per GithubAppType, NOT_CONNECTED included.")
    async def github_tokens(self, info: Info) -> list[GithubTokenStatus]:
        return await token_statuses(self.id, info)

    @classmethod
    def from_domain(cls, user: users.UserProfile) -> User:
        return cls(
            id=strawberry.ID(user.id),
            email=user.email,
            display_name=user.display_name,
            created_at=user.created_at,
            purged_at=user.purged_at,
        )


@strawberry.type
class Viewer:
    id: strawberry.ID
    role: Role

    @field(description="One entry per GithubAppType, NOT_CONNECTED included.")
    async def github_tokens(self, info: Info) -> list[GithubTokenStatus]:
        return await token_statuses(self.id, info)

    @strawberry.field
    async def github_token(
        self, info: Info, app_type: AppType = AppType.STANDARD
    ) -> GithubTokenStatus:
        token = await status.token_status(self.id, app_type, info.context.now())
        return GithubTokenStatus.from_domain(token)


@strawberry.type
class Query:
    @field(description="Any authenticated principal.", permission_classes=[IsAuthenticated])
    async def viewer(self, info: Info) -> Viewer:
        principal = require_principal(info)
        if principal.role is Role.USER:
            await info.context.ensure_user(principal)
        return Viewer(id=strawberry.ID(principal.id), role=principal.role)

    @field(description="ADMIN. Null when there is no such user.", permission_classes=[IsAdmin])
    async def user(self, id: strawberry.ID) -> User | None:
        user = await users.get_user(id)
        return User.from_domain(user) if user else None
