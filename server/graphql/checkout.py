"""checkoutGithubToken: the one field that hands out a plaintext token (SERVICE only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from server.domain import checkout
from server.domain.enums import AppType
from server.domain.leases import DEFAULT_LEASE_SECONDS
from server.graphql.fields import mutation
from server.graphql.permissions import IsService, require_principal
from server.graphql.types import Info, OperationError, to_result


@strawberry.type
class CheckoutSuccess:
    access_token: str
    access_token_expires_at: datetime | None
    github_user_id: str
    github_login: str
    commit_author: str = strawberry.field(
        description="Ready for `git commit --author`: login <id+login@users.noreply.github.com>"
    )
    refreshed: bool = strawberry.field(
        description="True when this call refreshed the token at GitHub."
    )
    usable_until: datetime = strawberry.field(
        description=(
            "The token keeps working at GitHub at least until then (no refresh by ghvault "
            "breaks it). Earlier than now + leaseSeconds only when the token cannot be promised "
            "that long; a checkout after then refreshes it and gets a full window."
        )
    )
    credential_version: int = strawberry.field(
        description="Which stored token this is; name it in reportGithubTokenRejected."
    )


CheckoutGithubTokenResult = Annotated[
    CheckoutSuccess | OperationError, strawberry.union("CheckoutGithubTokenResult")
]


@strawberry.type
class Mutation:
    @mutation(
        description=(
            "SERVICE. A usable access token, promised to keep working until usableUntil; "
            "refreshed at GitHub first when it is near expiry and nobody holds a window on it."
        ),
        permission_classes=[IsService],
    )
    async def checkout_github_token(
        self,
        info: Info,
        user_id: strawberry.ID,
        app_type: AppType = AppType.STANDARD,
        lease_seconds: Annotated[
            int,
            strawberry.argument(
                description=(
                    "How long the worker needs the token, 1..3600: the length of its job. "
                    "No refresh breaks the token before usableUntil."
                )
            ),
        ] = DEFAULT_LEASE_SECONDS,
    ) -> CheckoutGithubTokenResult:
        context = info.context
        outcome = await checkout.checkout_token(
            require_principal(info),
            user_id,
            app_type,
            lease_seconds=lease_seconds,
            now=context.now(),
            keyring=context.settings.keyring,
            github=context.github_for(app_type),
            locks=context.refresh_locks,
        )
        return to_result(
            outcome,
            lambda token: CheckoutSuccess(
                access_token=token.access_token,
                access_token_expires_at=token.access_token_expires_at,
                github_user_id=token.github_user_id,
                github_login=token.github_login,
                commit_author=token.commit_author,
                refreshed=token.refreshed,
                usable_until=token.usable_until,
                credential_version=token.credential_version,
            ),
        )
