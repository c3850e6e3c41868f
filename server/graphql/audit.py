"""The audit log, for admins."""

from __future__ import annotations

from datetime import datetime

import strawberry

from server.domain import audit
from server.domain.enums import AppType, AuditAction, Role
from server.graphql.fields import field
from server.graphql.permissions import IsAdmin
from server.graphql.types import Connection, Edge


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
    def from_domain(cls, event: audit.AuditEntry) -> AuditEvent:
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
class AuditEventEdge(Edge[AuditEvent]):
    pass


@strawberry.type
class AuditEventConnection(Connection[AuditEventEdge]):
    pass


@strawberry.type
class Query:
    @field(description="ADMIN. Newest first. `first` is 1..100.", permission_classes=[IsAdmin])
    async def audit_events(
        self,
        user_id: strawberry.ID | None = strawberry.UNSET,
        action: AuditAction | None = strawberry.UNSET,
        first: int = 50,
        after: str | None = strawberry.UNSET,
    ) -> AuditEventConnection:
        page = await audit.list_events(
            user_id=user_id or None, action=action or None, first=first, after=after or None
        )
        return AuditEventConnection.from_page(
            page, edge=AuditEventEdge, node=AuditEvent.from_domain
        )
