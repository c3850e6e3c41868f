"""Mutation resolvers: each checks its principal and calls one domain function."""

from __future__ import annotations

import strawberry

from server.domain import checkout, connect, disconnect, purge, tokens
from server.domain.enums import AppType
from server.domain.errors import OperationError as DomainOperationError
from server.graphql.permissions import (
    IsAdmin,
    IsService,
    IsUser,
    IsUserOrAdmin,
    require_principal,
)
from server.graphql.types import (
    CheckoutGithubTokenResult,
    CheckoutSuccess,
    CompleteGithubConnectResult,
    CompleteGithubConnectSuccess,
    DisconnectGithubResult,
    DisconnectGithubSuccess,
    GithubConnectStart,
    GithubTokenStatus,
    Info,
    OperationError,
    PurgeUserResult,
    PurgeUserSuccess,
    RevokeTokenInput,
    RevokeTokenResult,
    RevokeTokenSuccess,
    StartGithubConnectResult,
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
        context = info.context
        result = await purge.purge_user(
            require_principal(info),
            user_id,
            now=context.now(),
            keyring=context.settings.keyring,
            github_for=context.github_for_all(),
        )
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return PurgeUserSuccess(
            user_id=strawberry.ID(result.user_id),
            deleted_tokens=result.deleted_tokens,
            purged_at=result.purged_at,
            already_purged=result.already_purged,
        )

    @strawberry.mutation(
        description="USER. Begin the GitHub App user authorization (state + PKCE).",
        permission_classes=[IsUser],
    )
    async def start_github_connect(
        self,
        info: Info,
        app_type: AppType = AppType.STANDARD,
        redirect_uri: str | None = strawberry.UNSET,
    ) -> StartGithubConnectResult:
        result = await connect.start_connect(
            require_principal(info),
            app_type,
            redirect_uri or None,
            now=info.context.now(),
            github=info.context.github_for(app_type),
        )
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return GithubConnectStart(
            authorize_url=result.authorize_url, state=result.state, expires_at=result.expires_at
        )

    @strawberry.mutation(
        description="USER. Finish it with the `code` and `state` GitHub sent to the redirect URI.",
        permission_classes=[IsUser],
    )
    async def complete_github_connect(
        self, info: Info, code: str, state: str
    ) -> CompleteGithubConnectResult:
        context = info.context
        result = await connect.complete_connect(
            require_principal(info),
            code,
            state,
            now=context.now(),
            keyring=context.settings.keyring,
            github_for=context.github_for_all(),
        )
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return CompleteGithubConnectSuccess(token=GithubTokenStatus.from_domain(result.token))

    @strawberry.mutation(
        description="USER. Revoke the grant at GitHub and delete the stored tokens.",
        permission_classes=[IsUser],
    )
    async def disconnect_github(
        self, info: Info, app_type: AppType = AppType.STANDARD
    ) -> DisconnectGithubResult:
        context = info.context
        result = await disconnect.disconnect(
            require_principal(info),
            app_type,
            now=context.now(),
            keyring=context.settings.keyring,
            github=context.github_for(app_type),
        )
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return DisconnectGithubSuccess(
            revoked_at_github=result.revoked_at_github,
            token=GithubTokenStatus.from_domain(result.token),
        )

    @strawberry.mutation(
        description="SERVICE. A usable access token, refreshed at GitHub when it is near expiry.",
        permission_classes=[IsService],
    )
    async def checkout_github_token(
        self, info: Info, user_id: strawberry.ID, app_type: AppType = AppType.STANDARD
    ) -> CheckoutGithubTokenResult:
        context = info.context
        result = await checkout.checkout_token(
            require_principal(info),
            user_id,
            app_type,
            now=context.now(),
            keyring=context.settings.keyring,
            github=context.github_for(app_type),
            locks=context.refresh_locks,
        )
        if isinstance(result, DomainOperationError):
            return OperationError.from_domain(result)
        return CheckoutSuccess(
            access_token=result.access_token,
            access_token_expires_at=result.access_token_expires_at,
            github_user_id=result.github_user_id,
            github_login=result.github_login,
            commit_author=result.commit_author,
            refreshed=result.refreshed,
        )
