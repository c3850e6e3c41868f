"""GraphQL types: thin mappings of the domain's results (names from API.graphql)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from server.domain import audit, status, users
from server.domain.enums import (
    AppType,
    AuditAction,
    ErrorCode,
    RevocationReason,
    Role,
    TokenState,
)
from server.domain.errors import OperationError as DomainOperationError
from server.domain.pagination import Page
from server.graphql.context import Context

strawberry.enum(AppType, name="GithubAppType")
strawberry.enum(Role, name="Role")
strawberry.enum(
    TokenState,
    name="TokenState",
    description=(
        "Derived from the stored row and the current time; never stored.\n"
        "NOT_CONNECTED: no row. REVOKED: revokedAt is set.\n"
        "ACTIVE: access token not expired (or has no expiry).\n"
        "EXPIRED: access token expired, refresh token still valid (refreshable).\n"
        "REFRESH_EXPIRED: access token expired and no usable refresh token: the user\n"
        "must connect again."
    ),
)
strawberry.enum(RevocationReason, name="RevocationReason")
strawberry.enum(ErrorCode, name="ErrorCode")
strawberry.enum(AuditAction, name="AuditAction")

Info = strawberry.Info[Context, None]


@strawberry.type(
    description=(
        "An expected failure, returned as data. `message` is for people, `code` for programs."
    )
)
class OperationError:
    code: ErrorCode
    message: str
    field: str | None = None

    @classmethod
    def from_domain(cls, error: DomainOperationError) -> OperationError:
        return cls(code=error.code, message=error.message, field=error.field)


@strawberry.type
class GithubTokenStatus:
    user_id: strawberry.ID
    app_type: AppType
    state: TokenState
    needs_reconnect: bool = strawberry.field(
        description="True when the user must (re)connect: NOT_CONNECTED, REVOKED, REFRESH_EXPIRED."
    )
    github_user_id: str | None
    github_login: str | None
    access_token_expires_at: datetime | None
    refresh_token_expires_at: datetime | None
    revoked_at: datetime | None
    revocation_reason: RevocationReason | None
    connected_at: datetime | None
    updated_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_domain(cls, token: status.TokenStatus) -> GithubTokenStatus:
        return cls(
            user_id=strawberry.ID(token.user_id),
            app_type=token.app_type,
            state=token.state,
            needs_reconnect=token.needs_reconnect,
            github_user_id=token.github_user_id,
            github_login=token.github_login,
            access_token_expires_at=token.access_token_expires_at,
            refresh_token_expires_at=token.refresh_token_expires_at,
            revoked_at=token.revoked_at,
            revocation_reason=token.revocation_reason,
            connected_at=token.connected_at,
            updated_at=token.updated_at,
            last_used_at=token.last_used_at,
        )


async def _token_statuses(user_id: str, info: Info) -> list[GithubTokenStatus]:
    statuses = await status.token_statuses(user_id, info.context.now())
    return [GithubTokenStatus.from_domain(token) for token in statuses]


@strawberry.type
class User:
    id: strawberry.ID
    email: str | None = strawberry.field(description="Null once the user is purged.")
    display_name: str | None = strawberry.field(description="Null once the user is purged.")
    created_at: datetime
    purged_at: datetime | None

    @strawberry.field(description="One entry per GithubAppType, NOT_CONNECTED included.")
    async def github_tokens(self, info: Info) -> list[GithubTokenStatus]:
        return await _token_statuses(self.id, info)

    @classmethod
    def from_domain(cls, user: users.User) -> User:
        return cls(
            id=strawberry.ID(user.id),
            email=user.email,
            display_name=user.display_name,
            created_at=user.created_at,
            purged_at=user.purged_at,
        )


@strawberry.type
class Viewer:
    id: strawberry.ID
    role: Role

    @strawberry.field(description="One entry per GithubAppType, NOT_CONNECTED included.")
    async def github_tokens(self, info: Info) -> list[GithubTokenStatus]:
        return await _token_statuses(self.id, info)

    @strawberry.field
    async def github_token(
        self, info: Info, app_type: AppType = AppType.STANDARD
    ) -> GithubTokenStatus:
        token = await status.token_status(self.id, app_type, info.context.now())
        return GithubTokenStatus.from_domain(token)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


def page_info(page: Page[object]) -> PageInfo:
    return PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor)


@strawberry.type
class GithubTokenEdge:
    cursor: str
    node: GithubTokenStatus


@strawberry.type
class GithubTokenConnection:
    edges: list[GithubTokenEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[status.TokenStatus]) -> GithubTokenConnection:
        return cls(
            edges=[
                GithubTokenEdge(cursor=cursor, node=GithubTokenStatus.from_domain(token))
                for cursor, token in page.items
            ],
            page_info=page_info(page),
        )


@strawberry.input(
    description=(
        "States that are derived (ACTIVE, EXPIRED, REFRESH_EXPIRED, REVOKED) filter\n"
        "stored rows; NOT_CONNECTED matches nothing here."
    )
)
class GithubTokenFilter:
    app_type: AppType | None = strawberry.UNSET
    state: TokenState | None = strawberry.UNSET
    github_login: str | None = strawberry.UNSET
    github_user_id: str | None = strawberry.UNSET

    def to_domain(self) -> status.TokenFilter:
        return status.TokenFilter(
            app_type=self.app_type or None,
            state=self.state or None,
            github_login=self.github_login or None,
            github_user_id=self.github_user_id or None,
        )


@strawberry.type(description="Append-only. Holds ids, never PII or tokens.")
class AuditEvent:
    id: strawberry.ID
    occurred_at: datetime
    action: AuditAction
    actor_role: Role | None
    actor_id: str | None
    subject_user_id: strawberry.ID | None
    app_type: AppType | None
    detail: str | None = strawberry.field(
        description="Small JSON object of non-sensitive facts (counts, reasons, key ids)."
    )

    @classmethod
    def from_domain(cls, event: audit.AuditEvent) -> AuditEvent:
        return cls(
            id=strawberry.ID(str(event.id)),
            occurred_at=event.occurred_at,
            action=event.action,
            actor_role=event.actor_role,
            actor_id=event.actor_id,
            subject_user_id=(
                strawberry.ID(event.subject_user_id) if event.subject_user_id else None
            ),
            app_type=event.app_type,
            detail=event.detail,
        )


@strawberry.type
class AuditEventEdge:
    cursor: str
    node: AuditEvent


@strawberry.type
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[audit.AuditEvent]) -> AuditEventConnection:
        return cls(
            edges=[
                AuditEventEdge(cursor=cursor, node=AuditEvent.from_domain(event))
                for cursor, event in page.items
            ],
            page_info=page_info(page),
        )


# ---------------------------------------------------------------- mutation results


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
class PurgeUserSuccess:
    user_id: strawberry.ID
    deleted_tokens: int
    purged_at: datetime
    already_purged: bool


PurgeUserResult = Annotated[PurgeUserSuccess | OperationError, strawberry.union("PurgeUserResult")]


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
class DisconnectGithubSuccess:
    revoked_at_github: bool = strawberry.field(
        description="False when GitHub could not be reached; the local row is deleted regardless."
    )
    token: GithubTokenStatus


DisconnectGithubResult = Annotated[
    DisconnectGithubSuccess | OperationError, strawberry.union("DisconnectGithubResult")
]


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


CheckoutGithubTokenResult = Annotated[
    CheckoutSuccess | OperationError, strawberry.union("CheckoutGithubTokenResult")
]
