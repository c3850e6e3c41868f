"""Mutation resolvers: each checks its principal and calls one domain function."""

from __future__ import annotations

import strawberry

from server.domain import purge, tokens
from server.domain.errors import OperationError as DomainOperationError
from server.graphql.permissions import IsAdmin, IsService, IsUserOrAdmin, require_principal
from server.graphql.types import (
    GithubTokenStatus,
    Info,
    OperationError,
    PurgeUserResult,
    PurgeUserSuccess,
    RevokeTokenInput,
    RevokeTokenResult,
    RevokeTokenSuccess,
    StoreGithubTokenInput,
    StoreGithubTokenResult,
    StoreGithubTokenSuccess,
)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="SERVICE. Upsert the tokens an existing OAuth callback obtained.",
        permission_classes=[IsService],
    )
    async def store_github_token(
        self,
        info: Info,
        input: StoreGithubTokenInput,
    ) -> StoreGithubTokenResult:
        result = await tokens.store_token(
            require_principal(info),
            tokens.StoreTokenInput(
                user_id=input.user_id,
                app_type=input.app_type,
                github_user_id=input.github_user_id,
                github_login=input.github_login,
                access_token=input.access_token,
                access_token_expires_at=input.access_token_expires_at or None,
                refresh_token=input.refresh_token or None,
                refresh_token_expires_at=input.refresh_token_expires_at or None,
                email=input.email or None,
                display_name=input.display_name or None,
                github_email=input.github_email or None,
            ),
            keyring=info.context.settings.keyring,
            now=info.context.now(),
        )
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return StoreGithubTokenSuccess(token=GithubTokenStatus.from_domain(result.token))

    @strawberry.mutation(
        description="USER (own) or ADMIN (any).", permission_classes=[IsUserOrAdmin]
    )
    async def revoke_token(
        self,
        info: Info,
        input: RevokeTokenInput,
    ) -> RevokeTokenResult:
        result = await tokens.revoke_token(
            require_principal(info),
            user_id=input.user_id or None,
            app_type=input.app_type,
            now=info.context.now(),
        )
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return RevokeTokenSuccess(
            token=GithubTokenStatus.from_domain(result.token),
            already_revoked=result.already_revoked,
        )

    @strawberry.mutation(
        description="ADMIN. GDPR erasure: see DESIGN.md.", permission_classes=[IsAdmin]
    )
    async def purge_user(self, info: Info, user_id: strawberry.ID) -> PurgeUserResult:
        result = await purge.purge_user(require_principal(info), user_id, now=info.context.now())
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return PurgeUserSuccess(
            user_id=strawberry.ID(result.user_id),
            deleted_tokens=result.deleted_tokens,
            purged_at=result.purged_at,
            already_purged=result.already_purged,
        )
