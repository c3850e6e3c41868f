"""githubTokenChanged: a token's status, pushed over graphql-transport-ws.

The socket is authenticated once, by the `connection_init` payload
(server/http/websocket.py); here each subscription checks who may watch
which token. Payloads are statuses: never a token, never a ciphertext.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from server.domain.changes import TooManySubscriptions
from server.domain.enums import AppType, RequestErrorCode, Role
from server.domain.errors import InvalidInput
from server.graphql.errors import ApiError, forbidden
from server.graphql.fields import subscription
from server.graphql.permissions import IsAuthenticated, require_principal
from server.graphql.status import GithubTokenStatus
from server.graphql.types import Info


def _target(info: Info, user_id: str | None) -> str:
    """Whose token the caller may watch: their own (USER) or the one named (ADMIN)."""
    principal = require_principal(info)
    if principal.role is Role.ADMIN:
        if not user_id:
            raise InvalidInput("userId is required for an ADMIN", "userId")
        return user_id
    if principal.role is not Role.USER or (user_id and user_id != principal.id):
        raise forbidden()
    return principal.id


@strawberry.type
class Subscription:
    @subscription(
        description=(
            "USER: their own token of appType (no userId). ADMIN: userId required.\n"
            "First the current status, then the new status after each change a status read\n"
            "would see (store, refresh, revoke, disconnect, purge, webhook, sweep, expiry)."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def github_token_changed(
        self,
        info: Info,
        app_type: AppType | None = AppType.STANDARD,
        user_id: strawberry.ID | None = strawberry.UNSET,
    ) -> AsyncGenerator[GithubTokenStatus, None]:
        context = info.context
        principal = require_principal(info)
        target = _target(info, user_id or None)
        statuses = context.token_changes.watch(
            principal.id, target, app_type or AppType.STANDARD, clock=context.clock
        )
        try:
            async for status in statuses:
                yield GithubTokenStatus.from_domain(status)
        except TooManySubscriptions:
            raise ApiError(
                "Too many open subscriptions for this principal; complete some first.",
                RequestErrorCode.TOO_MANY_SUBSCRIPTIONS,
            ) from None
        finally:
            await statuses.aclose()
