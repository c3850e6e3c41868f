"""issueGithubCapability (SERVICE) and revokeGithubCapability (SERVICE or ADMIN)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from server.domain.enums import AppType, CapabilityAccess
from server.github_proxy import capabilities
from server.graphql.fields import mutation
from server.graphql.permissions import IsService, IsServiceOrAdmin, require_principal
from server.graphql.types import Info, OperationError, to_result

strawberry.enum(
    CapabilityAccess,
    name="GithubCapabilityAccess",
    description=(
        "READ: GET and HEAD through /github/api, git fetch and clone.\n"
        "WRITE: every method, and git push."
    ),
)


@strawberry.input
class IssueGithubCapabilityInput:
    user_id: strawberry.ID
    app_type: AppType = AppType.STANDARD
    repositories: list[str] = strawberry.field(
        default_factory=list,
        description="owner/name; empty: whatever the user's token reaches.",
    )
    access: CapabilityAccess = CapabilityAccess.READ
    ttl_seconds: int = strawberry.field(default=900, description="60..3600")


@strawberry.type(
    description=(
        "A short-lived stand-in for the user's token, redeemed only by ghvault's GitHub proxy."
    )
)
class GithubCapabilityIssued:
    capability: str = strawberry.field(description="ghvcap_...; shown once, stored only as a hash.")
    id: strawberry.ID
    expires_at: datetime


IssueGithubCapabilityResult = Annotated[
    GithubCapabilityIssued | OperationError, strawberry.union("IssueGithubCapabilityResult")
]


@strawberry.type
class RevokeGithubCapabilitySuccess:
    id: strawberry.ID
    already_revoked: bool


RevokeGithubCapabilityResult = Annotated[
    RevokeGithubCapabilitySuccess | OperationError, strawberry.union("RevokeGithubCapabilityResult")
]


@strawberry.type
class Mutation:
    @mutation(
        description=(
            "SERVICE. A capability for the user's token: send it to /github/api/... as\n"
            "`Authorization: Bearer <capability>`, or use it as the git password for\n"
            "/github/git/{owner}/{name}.git. The token itself never leaves ghvault."
        ),
        permission_classes=[IsService],
    )
    async def issue_github_capability(
        self, info: Info, input: IssueGithubCapabilityInput
    ) -> IssueGithubCapabilityResult:
        outcome = await capabilities.issue_capability(
            require_principal(info),
            capabilities.CapabilityRequest(
                user_id=input.user_id,
                app_type=input.app_type,
                repositories=input.repositories,
                access=input.access,
                ttl_seconds=input.ttl_seconds,
            ),
            now=info.context.now(),
        )
        return to_result(
            outcome,
            lambda issued: GithubCapabilityIssued(
                capability=issued.capability,
                id=strawberry.ID(issued.id),
                expires_at=issued.expires_at,
            ),
        )

    @mutation(
        description="SERVICE or ADMIN. End a capability now; idempotent.",
        permission_classes=[IsServiceOrAdmin],
    )
    async def revoke_github_capability(
        self, info: Info, id: strawberry.ID
    ) -> RevokeGithubCapabilityResult:
        outcome = await capabilities.revoke_capability(
            require_principal(info), id, now=info.context.now()
        )
        return to_result(
            outcome,
            lambda revoked: RevokeGithubCapabilitySuccess(
                id=strawberry.ID(revoked.id), already_revoked=revoked.already_revoked
            ),
        )
