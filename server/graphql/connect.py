"""startGithubConnect and completeGithubConnect: the GitHub App user authorization."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from server.domain import connect
from server.domain.enums import AppType
from server.graphql.fields import mutation
from server.graphql.permissions import IsUser, require_principal
from server.graphql.status import GithubTokenStatus
from server.graphql.types import Info, OperationError, to_result


@strawberry.type
class GithubConnectStart:
    authorize_url: str = strawberry.field(description="Send the browser here.")
    state: str
    expires_at: datetime


StartGithubConnectResult = Annotated[
    GithubConnectStart | OperationError, strawberry.union("StartGithubConnectResult")
]


@strawberry.type
class CompleteGithubConnectSuccess:
    token: GithubTokenStatus


CompleteGithubConnectResult = Annotated[
    CompleteGithubConnectSuccess | OperationError, strawberry.union("CompleteGithubConnectResult")
]


@strawberry.type
class Mutation:
    @mutation(
        description="USER. Begin the GitHub App user authorization (state + PKCE).",
        permission_classes=[IsUser],
    )
    async def start_github_connect(
        self,
        info: Info,
        app_type: AppType = AppType.STANDARD,
        redirect_uri: str | None = strawberry.UNSET,
    ) -> StartGithubConnectResult:
        outcome = await connect.start_connect(
            require_principal(info),
            app_type,
            redirect_uri or None,
            now=info.context.now(),
            github=info.context.github_for(app_type),
        )
        return to_result(
            outcome,
            lambda started: GithubConnectStart(
                authorize_url=started.authorize_url,
                state=started.state,
                expires_at=started.expires_at,
            ),
        )

    @mutation(
        description="USER. Finish it with the `code` and `state` GitHub sent to the redirect URI.",
        permission_classes=[IsUser],
    )
    async def complete_github_connect(
        self, info: Info, code: str, state: str
    ) -> CompleteGithubConnectResult:
        context = info.context
        outcome = await connect.complete_connect(
            require_principal(info),
            code,
            state,
            now=context.now(),
            keyring=context.settings.keyring,
            github_for=context.github_for_all(),
        )
        return to_result(
            outcome,
            lambda stored: CompleteGithubConnectSuccess(
                token=GithubTokenStatus.from_domain(stored.token)
            ),
        )
