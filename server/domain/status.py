"""Token status: what the frontend shows, derived from a row and the time.

Status reads select no ciphertext and never decrypt.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from piccolo.columns.combination import WhereRaw
from piccolo.custom_types import Combinable
from piccolo.query.functions.string import Lower
from piccolo.query.methods.select import Select
from piccolo.querystring import QueryString

from server.domain.enums import AppType, RevocationReason, TokenState
from server.domain.errors import InvalidInput
from server.domain.pagination import Page, check_page_size, decode_cursor, encode_cursor, paginate
from server.identifiers import canonical_github_user_id
from server.storage.reads import PreparedSelect
from server.storage.tables import UserGithubAppToken as Token
from server.storage.token_counts import counts_at

RECONNECT_STATES = frozenset(
    {TokenState.NOT_CONNECTED, TokenState.REVOKED, TokenState.REFRESH_EXPIRED}
)

# Everything a status needs; the ciphertext columns are deliberately absent.
STATUS_COLUMNS = (
    Token.id,
    Token.user_id,
    Token.github_app_type,
    Token.github_user_id,
    Token.github_login,
    Token.access_token_expires_at,
    Token.refresh_token_expires_at,
    QueryString("refresh_token_encrypted IS NOT NULL").as_alias("has_refresh_token"),
    Token.revoked_at,
    Token.revocation_reason,
    Token.created_at,
    Token.updated_at,
    Token.last_used_at,
)


@dataclass(frozen=True)
class TokenStatus:
    user_id: str
    app_type: AppType
    state: TokenState
    github_user_id: str | None = None
    github_login: str | None = None
    access_token_expires_at: datetime | None = None
    refresh_token_expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revocation_reason: RevocationReason | None = None
    connected_at: datetime | None = None
    updated_at: datetime | None = None
    last_used_at: datetime | None = None
    row_id: Any = None

    @property
    def needs_reconnect(self) -> bool:
        return self.state in RECONNECT_STATES


def derive_state(
    *,
    revoked_at: datetime | None,
    access_token_expires_at: datetime | None,
    has_refresh_token: bool,
    refresh_token_expires_at: datetime | None,
    now: datetime,
) -> TokenState:
    if revoked_at is not None:
        return TokenState.REVOKED
    if access_token_expires_at is None or access_token_expires_at > now:
        return TokenState.ACTIVE
    if has_refresh_token and (refresh_token_expires_at is None or refresh_token_expires_at > now):
        return TokenState.EXPIRED
    return TokenState.REFRESH_EXPIRED


def not_connected(user_id: str, app_type: AppType) -> TokenStatus:
    return TokenStatus(user_id=user_id, app_type=app_type, state=TokenState.NOT_CONNECTED)


def status_from_row(row: dict[str, Any], now: datetime) -> TokenStatus:
    """`row` is a select of STATUS_COLUMNS."""
    has_refresh_token = bool(row["has_refresh_token"])
    reason = row["revocation_reason"]
    return TokenStatus(
        user_id=row["user_id"],
        app_type=AppType(row["github_app_type"]),
        state=derive_state(
            revoked_at=row["revoked_at"],
            access_token_expires_at=row["access_token_expires_at"],
            has_refresh_token=has_refresh_token,
            refresh_token_expires_at=row["refresh_token_expires_at"],
            now=now,
        ),
        github_user_id=row["github_user_id"],
        github_login=row["github_login"],
        access_token_expires_at=row["access_token_expires_at"],
        refresh_token_expires_at=row["refresh_token_expires_at"],
        revoked_at=row["revoked_at"],
        revocation_reason=RevocationReason(reason) if reason else None,
        connected_at=row["created_at"],
        updated_at=row["updated_at"],
        last_used_at=row["last_used_at"],
        row_id=row["id"],
    )


# The frontend's hot read, compiled once (see server.storage.reads).
_STATUS_OF = PreparedSelect(
    lambda user_id, app_type: Token.select(*STATUS_COLUMNS).where(
        (Token.user_id == user_id) & (Token.github_app_type == app_type)
    ),
    arity=2,
)


async def token_status(user_id: str, app_type: AppType, now: datetime) -> TokenStatus:
    row = await _STATUS_OF.first(user_id, app_type.value)
    return status_from_row(row, now) if row else not_connected(user_id, app_type)


async def token_statuses(user_id: str, now: datetime) -> list[TokenStatus]:
    """One status per app type, NOT_CONNECTED included, in AppType order."""
    rows = await Token.select(*STATUS_COLUMNS).where(Token.user_id == user_id)
    by_type = {AppType(row["github_app_type"]): status_from_row(row, now) for row in rows}
    return [by_type.get(app_type) or not_connected(user_id, app_type) for app_type in AppType]


def state_condition(state: TokenState, now: datetime) -> Combinable | None:
    """SQL for "rows in `state` at `now`"; None for NOT_CONNECTED (no row can match).

    Mirrors `derive_state`; tests check the two agree.
    """
    live = Token.revoked_at.is_null()
    fresh_access = Token.access_token_expires_at.is_null() | (Token.access_token_expires_at > now)
    stale_access = Token.access_token_expires_at <= now
    usable_refresh = Token.refresh_token_encrypted.is_not_null() & (
        Token.refresh_token_expires_at.is_null() | (Token.refresh_token_expires_at > now)
    )
    unusable_refresh = Token.refresh_token_encrypted.is_null() | (
        Token.refresh_token_expires_at <= now
    )
    conditions: dict[TokenState, Combinable] = {
        TokenState.REVOKED: Token.revoked_at.is_not_null(),
        TokenState.ACTIVE: live & fresh_access,
        TokenState.EXPIRED: live & stale_access & usable_refresh,
        TokenState.REFRESH_EXPIRED: live & stale_access & unusable_refresh,
    }
    return conditions.get(state)


STORED_STATES = (
    TokenState.ACTIVE,
    TokenState.EXPIRED,
    TokenState.REFRESH_EXPIRED,
    TokenState.REVOKED,
)


def states_from_counts(
    counts: Mapping[AppType, Mapping[str, int]],
) -> dict[tuple[AppType, TokenState], int]:
    """Rows per (app type, state) from the kept counts at an instant (see
    server/storage/token_counts.py); mirrors `derive_state`, tests check the two agree."""
    states = {}
    for app_type in AppType:
        kept = counts[app_type]
        # Every REFRESH_EXPIRED row's access has expired: it is part of access_expired.
        states[app_type, TokenState.ACTIVE] = kept["live"] - kept["access_expired"]
        states[app_type, TokenState.EXPIRED] = kept["access_expired"] - kept["refresh_expired"]
        states[app_type, TokenState.REFRESH_EXPIRED] = kept["refresh_expired"]
        states[app_type, TokenState.REVOKED] = kept["revoked"]
    return states


async def count_by_state(now: datetime) -> dict[tuple[AppType, TokenState], int]:
    """Stored rows per (app type, state) at `now`, zeros included, from the kept counts."""
    return states_from_counts(await counts_at(now))


@dataclass(frozen=True)
class TokenFilter:
    app_type: AppType | None = None
    state: TokenState | None = None
    github_login: str | None = None
    github_user_id: str | None = None


def list_query(
    token_filter: TokenFilter, *, first: int, after: str | None, now: datetime
) -> Select[Any] | None:
    """The SELECT of one page, newest first; None when no row can match.

    Every filter has an index ending in (created_at, id), and the cursor is
    a row-value bound on that key, so a page walks one index from where the
    last one stopped instead of scanning and sorting the table.
    """
    check_page_size(first)
    conditions: list[Combinable | QueryString] = []
    if token_filter.state is not None:
        condition = state_condition(token_filter.state, now)
        if condition is None:
            return None
        conditions.append(condition)
    if token_filter.app_type is not None:
        conditions.append(Token.github_app_type == token_filter.app_type.value)
    if token_filter.github_login is not None:
        # GitHub logins are case-insensitive; compared whole, not as a pattern.
        conditions.append(Lower(Token.github_login) == token_filter.github_login.lower())
    if token_filter.github_user_id is not None:
        github_user_id = canonical_github_user_id(token_filter.github_user_id)
        if github_user_id is None:
            raise InvalidInput("githubUserId must be GitHub's numeric user id", "githubUserId")
        conditions.append(Token.github_user_id == github_user_id)
    if after is not None:
        created_at, row_id = decode_cursor(after, 2)
        try:
            last_created = datetime.fromisoformat(created_at)
            last_id = uuid.UUID(row_id)
        except (TypeError, ValueError, AttributeError):
            raise InvalidInput("after is not a cursor from this list", "after") from None
        conditions.append(WhereRaw("(created_at, id) < ({}, {})", last_created, last_id))
    query = (
        Token.select(*STATUS_COLUMNS)
        .order_by(Token.created_at, Token.id, ascending=False)
        .limit(first + 1)
    )
    return query.where(*conditions) if conditions else query


async def list_statuses(
    token_filter: TokenFilter, *, first: int, after: str | None, now: datetime
) -> Page[TokenStatus]:
    """Stored rows, newest first (created_at, then id, descending)."""
    query = list_query(token_filter, first=first, after=after, now=now)
    if query is None:
        return Page(items=[], has_next_page=False)
    rows = await query
    return paginate(
        [status_from_row(row, now) for row in rows],
        first,
        lambda status: encode_cursor(status.connected_at.isoformat(), str(status.row_id)),
    )
