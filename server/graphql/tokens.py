"""storeGithubToken (the commit worker's OAuth callback) and revokeToken."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from server.domain import tokens
from server.domain.enums import AppType
from server.graphql.fields import mutation
from server.graphql.permissions import IsService, IsUserOnSelfOrAdmin, require_principal
from server.graphql.status import GithubTokenStatus
from server.graphql.types import Info, OperationError, to_result


@strawberry.input
class StoreGithubTokenInput:
    user_id: strawberry.ID
    app_type: AppType = AppType.STANDARD
    email: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Profile of the user, stored (PII) and removed by purgeUser.",
    )
    display_name: str | None = strawberry.UNSET
    github_user_id: str
    github_login: str
    github_email: str | None = strawberry.UNSET
    access_token: str = strawberry.field(description="ghu_...")
    access_token_expires_at: datetime | None = strawberry.UNSET
    refresh_token: str | None = strawberry.field(default=strawberry.UNSET, description="ghr_...")
    refresh_token_expires_at: datetime | None = strawberry.UNSET

    def to_domain(self) -> tokens.StoreTokenInput:
        return tokens.StoreTokenInput(
            user_id=self.user_id,
            app_type=self.app_type,
            github_user_id=self.github_user_id,
            github_login=self.github_login,
            access_token=self.access_token,
            access_token_expires_at=self.access_token_expires_at or None,
            refresh_token=self.refresh_token or None,
            refresh_token_expires_at=self.refresh_token_expires_at or None,
            email=self.email or None,
            display_name=self.display_name or None,
            github_email=self.github_email or None,
        )


@strawberry.type
class StoreGithubTokenSuccess:
    token: GithubTokenStatus


StoreGithubTokenResult = Annotated[
    StoreGithubTokenSuccess | OperationError, strawberry.union("StoreGithubTokenResult")
]


@strawberry.input(
    description=(
        "Omit userId to revoke your own token (reason USER_REVOKED). An ADMIN may\n"
        "name any user (reason ADMIN). Revoking is soft and idempotent: the row stays,\n"
        "marked revoked; the encrypted tokens are erased."
    )
)
class RevokeTokenInput:
    user_id: strawberry.ID | None = strawberry.UNSET
    app_type: AppType = AppType.STANDARD


@strawberry.type
class RevokeTokenSuccess:
    token: GithubTokenStatus
    already_revoked: bool


RevokeTokenResult = Annotated[
    RevokeTokenSuccess | OperationError, strawberry.union("RevokeTokenResult")
]


@strawberry.type
class Mutation:
    @mutation(
        description="SERVICE. Upsert the tokens an existing OAuth callback obtained.",
        permission_classes=[IsService],
    )
    async def store_github_token(
        self, info: Info, input: StoreGithubTokenInput
    ) -> StoreGithubTokenResult:
        outcome = await tokens.store_token(
            require_principal(info),
            input.to_domain(),
            keyring=info.context.settings.keyring,
            now=info.context.now(),
        )
        return to_result(
            outcome,
            lambda stored: StoreGithubTokenSuccess(
                token=GithubTokenStatus.from_domain(stored.token)
            ),
        )

    @mutation(description="USER (own) or ADMIN (any).", permission_classes=[IsUserOnSelfOrAdmin])
    async def revoke_token(self, info: Info, input: RevokeTokenInput) -> RevokeTokenResult:
        outcome = await tokens.revoke_token(
            require_principal(info),
            user_id=input.user_id or None,
            app_type=input.app_type,
            now=info.context.now(),
        )
        return to_result(
            outcome,
            lambda revoked: RevokeTokenSuccess(
                token=GithubTokenStatus.from_domain(revoked.token),
                already_revoked=revoked.already_revoked,
            ),
        )
