"""The audit log: one append-only event per change, written in its transaction."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from piccolo.columns.combination import WhereRaw
from piccolo.query.methods.select import Select

from server.auth import Principal
from server.domain.enums import AppType, AuditAction, Role
from server.domain.errors import InvalidInput
from server.domain.pagination import Page, check_page_size, decode_cursor, encode_cursor, paginate
from server.redaction import redact_obj
from server.storage.tables import AuditEvent as AuditEventRow


@dataclass(frozen=True)
class AuditEntry:
    id: int
    occurred_at: datetime
    action: AuditAction
    actor_role: Role | None
    actor_id: str | None
    subject_user_id: str | None
    app_type: AppType | None
    detail: str | None


async def record(
    action: AuditAction,
    *,
    actor: Principal | None,
    now: datetime,
    subject_user_id: str | None = None,
    app_type: AppType | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one event. Call inside the transaction of the change it records.

    `detail` holds ids, counts and reasons; it is redacted anyway, so a
    mistake cannot put a token in the log.
    """
    await AuditEventRow.insert(
        AuditEventRow(
            occurred_at=now,
            action=action.value,
            actor_role=actor.role.value if actor else None,
            actor_id=actor.id if actor else None,
            subject_user_id=subject_user_id,
            github_app_type=app_type.value if app_type else None,
            detail=json.dumps(redact_obj(detail), sort_keys=True) if detail else None,
        )
    )


def _action_conditions() -> dict[AuditAction, str]:
    """`action = '<value>'` per action, with the value written into the SQL, not bound.

    Actions differ wildly in how common they are. Bound as a parameter, a
    prepared statement soon gets PostgreSQL's generic plan, made for an
    average action: it walks the primary key newest first and filters, which
    for a rare action (a revocation among a million stores) reads most of the
    table. Written in, each action gets its own statement, planned for it:
    a rare one takes the (action, id) index. The values are the enum's own
    words, checked once here, never a caller's text.
    """
    conditions = {}
    for action in AuditAction:
        if not re.fullmatch(r"[a-z_]+", action.value):
            raise ValueError(f"not an audit action word: {action.value!r}")
        conditions[action] = f"action = '{action.value}'"
    return conditions


_ACTION_CONDITIONS = _action_conditions()


def list_query(
    *, user_id: str | None, action: AuditAction | None, first: int, after: str | None
) -> Select[Any]:
    """The SELECT of one page: newest first, walking the primary key or the
    (subject_user_id, id) / (action, id) index."""
    check_page_size(first)
    if user_id is None and action is not None:
        # The page's ids from the (action, id) index alone, then their rows. Asked
        # for whole rows, PostgreSQL may walk the primary key and filter, which is
        # cheaper only while the action's events are spread evenly; when they are
        # not (a mass revocation long ago, stores since) it reads most of the log.
        ids = _page(AuditEventRow.select(AuditEventRow.id), user_id, action, first, after)
        where = AuditEventRow.id.is_in(ids)
        return AuditEventRow.select().where(where).order_by(AuditEventRow.id, ascending=False)
    return _page(AuditEventRow.select(), user_id, action, first, after)


def _page(
    query: Select[Any],
    user_id: str | None,
    action: AuditAction | None,
    first: int,
    after: str | None,
) -> Select[Any]:
    query = query.order_by(AuditEventRow.id, ascending=False).limit(first + 1)
    if user_id is not None:
        query = query.where(AuditEventRow.subject_user_id == user_id)
    if action is not None:
        query = query.where(WhereRaw(_ACTION_CONDITIONS[action]))
    if after is not None:
        (last_id,) = decode_cursor(after, 1)
        if not isinstance(last_id, int):
            raise InvalidInput("after is not a cursor from this list", "after")
        query = query.where(AuditEventRow.id < last_id)
    return query


async def list_events(
    *,
    user_id: str | None,
    action: AuditAction | None,
    first: int,
    after: str | None,
) -> Page[AuditEntry]:
    """Newest first; the id is the order (events are appended)."""
    query = list_query(user_id=user_id, action=action, first=first, after=after)
    rows = await query
    return paginate([_entry(row) for row in rows], first, lambda event: encode_cursor(event.id))


async def newest_events(user_id: str, limit: int) -> list[AuditEntry]:
    """The user's latest `limit` events, newest first (the (subject_user_id, id) index)."""
    rows = (
        await AuditEventRow.select()
        .where(AuditEventRow.subject_user_id == user_id)
        .order_by(AuditEventRow.id, ascending=False)
        .limit(limit)
    )
    return [_entry(row) for row in rows]


def _entry(row: dict[str, Any]) -> AuditEntry:
    detail = row["detail"]
    return AuditEntry(
        id=row["id"],
        occurred_at=row["occurred_at"],
        action=AuditAction(row["action"]),
        actor_role=Role(row["actor_role"]) if row["actor_role"] else None,
        actor_id=row["actor_id"],
        subject_user_id=row["subject_user_id"],
        app_type=AppType(row["github_app_type"]) if row["github_app_type"] else None,
        detail=detail if isinstance(detail, str) or detail is None else json.dumps(detail),
    )
