"""purgeUser: GDPR erasure, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from server.domain import purge
from server.graphql.fields import mutation
from server.graphql.permissions import IsAdmin, require_principal
from server.graphql.types import Info, OperationError, to_result


@strawberry.type
class PurgeUserSuccess:
    user_id: strawberry.ID
    deleted_tokens: int
    purged_at: datetime
    already_purged: bool


PurgeUserResult = Annotated[PurgeUserSuccess | OperationError, strawberry.union("PurgeUserResult")]


@strawberry.type
class Mutation:
    @mutation(
        description=(
            "ADMIN. GDPR erasure, idempotent: revokes the user's grants at GitHub (best\n"
            "effort), deletes their token rows and pending connects, and erases their\n"
            "email and name. The user id stays, marked purged, as do audit events (ids only)."
        ),
        permission_classes=[IsAdmin],
    )
    async def purge_user(self, info: Info, user_id: strawberry.ID) -> PurgeUserResult:
        context = info.context
        outcome = await purge.purge_user(
            require_principal(info),
            user_id,
            now=context.now(),
            keyring=context.settings.keyring,
            github_for=context.github_for_all(),
        )
        return to_result(
            outcome,
            lambda purged: PurgeUserSuccess(
                user_id=strawberry.ID(purged.user_id),
                deleted_tokens=purged.deleted_tokens,
                purged_at=purged.purged_at,
                already_purged=purged.already_purged,
            ),
        )
