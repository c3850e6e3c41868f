"""reportGithubTokenRejected: a worker tells ghvault that GitHub refused a token it holds."""

from __future__ import annotations

from typing import Annotated

import strawberry

from server.domain import rejection
from server.domain.enums import AppType, RejectionOutcome
from server.graphql.fields import mutation
from server.graphql.permissions import IsService, require_principal
from server.graphql.status import GithubTokenStatus
from server.graphql.types import Info, OperationError, to_result

strawberry.enum(
    RejectionOutcome,
    name="GithubTokenRejectionOutcome",
    description=(
        "STILL_VALID: GitHub accepts the token; look elsewhere for why it refused the request "
        "(permissions, SSO, a typo in the header).\n"
        "REFRESHED: GitHub had killed it; ghvault refreshed it: check out again.\n"
        "REVOKED: GitHub had killed it and it cannot be refreshed; the user must connect again.\n"
        "STALE: the version reported is not the stored one; nothing changed: check out again."
    ),
)


@strawberry.type
class ReportGithubTokenRejectedSuccess:
    outcome: RejectionOutcome
    token: GithubTokenStatus


ReportGithubTokenRejectedResult = Annotated[
    ReportGithubTokenRejectedSuccess | OperationError,
    strawberry.union("ReportGithubTokenRejectedResult"),
]


@strawberry.type
class Mutation:
    @mutation(
        description=(
            "SERVICE. GitHub answered 401 to a token checkoutGithubToken handed out: ghvault "
            "asks GitHub about that credentialVersion, and refreshes it, or revokes it "
            "(GITHUB_REJECTED) when it cannot be refreshed. A report about another version "
            f"changes nothing. At most {rejection.REPORTS_PER_USER} per user a minute, else "
            "RATE_LIMITED."
        ),
        permission_classes=[IsService],
    )
    async def report_github_token_rejected(
        self,
        info: Info,
        user_id: strawberry.ID,
        credential_version: Annotated[
            int, strawberry.argument(description="CheckoutSuccess.credentialVersion.")
        ],
        app_type: AppType = AppType.STANDARD,
    ) -> ReportGithubTokenRejectedResult:
        context = info.context
        outcome = await rejection.report_rejected(
            require_principal(info),
            user_id,
            app_type,
            credential_version,
            now=context.now(),
            keyring=context.settings.keyring,
            github=context.github_for(app_type),
            locks=context.refresh_locks,
            limit=context.rejection_reports,
        )
        return to_result(
            outcome,
            lambda report: ReportGithubTokenRejectedSuccess(
                outcome=report.outcome, token=GithubTokenStatus.from_domain(report.token)
            ),
        )
