"""disconnectGithub: the user takes their GitHub account back."""

from __future__ import annotations

from typing import Annotated

import strawberry

from server.domain import disconnect
from server.domain.enums import AppType
from server.graphql.fields import mutation
from server.graphql.permissions import IsUser, require_principal
from server.graphql.status import GithubTokenStatus
from server.graphql.types import Info, OperationError, to_result


@strawberry.type
class DisconnectGithubSuccess:
    revoked_at_github: bool = strawberry.field(
        description="False when GitHub could not be reached; the local row is deleted regardless."
    )
    token: GithubTokenStatus


DisconnectGithubResult = Annotated[
    DisconnectGithubSuccess | OperationError, strawberry.union("DisconnectGithubResult")
]


@strawberry.type
class Mutation:
    @mutation(
        description="USER. Revoke the grant at GitHub and delete the stored tokens.",
        permission_classes=[IsUser],
    )
    async def disconnect_github(
        self, info: Info, app_type: AppType = AppType.STANDARD
    ) -> DisconnectGithubResult:
        context = info.context
        outcome = await disconnect.disconnect(
            require_principal(info),
            app_type,
            now=context.now(),
            keyring=context.settings.keyring,
            github=context.github_for(app_type),
        )
        return to_result(
            outcome,
            lambda done: DisconnectGithubSuccess(
                revoked_at_github=done.revoked_at_github,
                token=GithubTokenStatus.from_domain(done.token),
            ),
        )
