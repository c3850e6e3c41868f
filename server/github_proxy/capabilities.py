"""Capabilities: short-lived, scoped stand-ins for a user's token, redeemed only by the proxy.

A capability is `ghvcap_` and 32 random bytes in base62. Only its SHA-256 is
stored (a capability has 256 bits of entropy, so a fast hash is as good as a
slow one), and it is shown once, when issued. It ends at its expiry, when
revoked, and with the token it stands for: revoking the token ends it
(`end_for_token`, called wherever a token row is revoked), and disconnect and
purge delete the token row, which deletes it (ON DELETE CASCADE).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from server.auth import Principal
from server.domain import audit
from server.domain.enums import AppType, AuditAction, CapabilityAccess, ErrorCode, Role
from server.domain.errors import NO_TOKEN_STORED, TOKEN_REVOKED, Refusal
from server.identifiers import is_user_id, parse_repository
from server.storage.reads import PreparedSelect
from server.storage.tables import AuditEvent
from server.storage.tables import GithubCapability as CapabilityRow
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import for_update, write_transaction

PREFIX = "ghvcap_"
SECRET_BYTES = 32
_BASE62 = string.digits + string.ascii_letters
# 62**43 > 2**256: every 32-byte value has a 43-character spelling.
SECRET_CHARS = 43
CAPABILITY = re.compile(rf"{PREFIX}[0-9A-Za-z]{{{SECRET_CHARS}}}")

MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 3600
MAX_REPOSITORIES = 100
# Ended capabilities are deleted when their token gets a new one, this long after
# they expired: long enough to answer a late revoke with "already revoked".
KEPT_AFTER_EXPIRY = timedelta(days=1)

NOT_FOUND = Refusal(ErrorCode.NOT_FOUND, "No capability has this id.", "id")


@dataclass(frozen=True)
class CapabilityRequest:
    user_id: str
    app_type: AppType
    repositories: Sequence[str]
    access: CapabilityAccess
    ttl_seconds: int


@dataclass(frozen=True)
class IssuedCapability:
    capability: str = field(repr=False)
    id: str
    expires_at: datetime


@dataclass(frozen=True)
class CapabilityRevocation:
    id: str
    already_revoked: bool


@dataclass(frozen=True)
class Capability:
    """A live capability, as the proxy redeemed it."""

    id: str
    user_id: str
    app_type: AppType
    github_user_id: str
    repositories: frozenset[str]  # canonical owner/name; empty: whatever the token reaches
    access: CapabilityAccess
    issued_by: str
    expires_at: datetime
    # Of the token row, read with the capability: a new version means a new token.
    credential_version: int

    @property
    def issuer(self) -> Principal:
        """Who acts, in the audit log, when the capability is used: the service that issued it."""
        return Principal(id=self.issued_by, role=Role.SERVICE)


def new_capability() -> str:
    number = int.from_bytes(secrets.token_bytes(SECRET_BYTES), "big")
    chars = []
    for _ in range(SECRET_CHARS):
        number, digit = divmod(number, len(_BASE62))
        chars.append(_BASE62[digit])
    return PREFIX + "".join(chars)


def secret_sha256(capability: str) -> str:
    return hashlib.sha256(capability.encode("ascii")).hexdigest()


def _invalid(message: str, field_name: str) -> Refusal:
    return Refusal(ErrorCode.INVALID_INPUT, message, field_name)


def _checked_repositories(request: CapabilityRequest) -> list[str] | Refusal:
    """The requested repositories, canonical, deduplicated and sorted; or why not."""
    if not is_user_id(request.user_id):
        return _invalid("userId must be 1 to 255 printable characters.", "userId")
    if not MIN_TTL_SECONDS <= request.ttl_seconds <= MAX_TTL_SECONDS:
        return _invalid(f"ttlSeconds must be {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}.", "ttlSeconds")
    if len(request.repositories) > MAX_REPOSITORIES:
        return _invalid(f"At most {MAX_REPOSITORIES} repositories.", "repositories")
    canonical = set()
    for position, text in enumerate(request.repositories):
        repository = parse_repository(text)
        if repository is None:
            # The position, not the text: the message must not echo what was sent.
            return _invalid(
                f"repositories[{position}] is not a GitHub repository (owner/name).",
                "repositories",
            )
        canonical.add(repository)
    return sorted(canonical)


async def issue_capability(
    actor: Principal, request: CapabilityRequest, *, now: datetime
) -> IssuedCapability | Refusal:
    """A new capability for the user's token of `request.app_type`; the plaintext is returned
    here once and never stored."""
    repositories = _checked_repositories(request)
    if isinstance(repositories, Refusal):
        return repositories
    async with write_transaction():
        # Locked, so a revocation either ends this capability or comes after it.
        token = await for_update(
            Token.select(Token.id, Token.github_user_id, Token.revoked_at).where(
                Token.of(request.user_id, request.app_type)
            )
        ).first()
        if token is None:
            return NO_TOKEN_STORED
        if token["revoked_at"] is not None:
            return TOKEN_REVOKED
        await CapabilityRow.delete().where(
            (CapabilityRow.token_id == token["id"])
            & (CapabilityRow.expires_at < now - KEPT_AFTER_EXPIRY)
        )
        capability, capability_id = new_capability(), uuid.uuid4()
        expires_at = now + timedelta(seconds=request.ttl_seconds)
        await CapabilityRow.insert(
            CapabilityRow(
                id=capability_id,
                secret_sha256=secret_sha256(capability),
                token_id=token["id"],
                user_id=request.user_id,
                github_app_type=request.app_type.value,
                github_user_id=token["github_user_id"],
                repositories=json.dumps(repositories),
                access=request.access.value,
                issued_by=actor.id,
                issued_at=now,
                expires_at=expires_at,
            )
        )
        await audit.record(
            AuditAction.GITHUB_CAPABILITY_ISSUED,
            actor=actor,
            now=now,
            subject_user_id=request.user_id,
            app_type=request.app_type,
            detail={
                "capability_id": str(capability_id),
                "access": request.access.value,
                "repositories": repositories,
                "ttl_seconds": request.ttl_seconds,
            },
        )
    return IssuedCapability(capability=capability, id=str(capability_id), expires_at=expires_at)


async def revoke_capability(
    actor: Principal, capability_id: str, *, now: datetime
) -> CapabilityRevocation | Refusal:
    """End a capability now; idempotent."""
    try:
        row_id = uuid.UUID(capability_id)
    except ValueError:
        return NOT_FOUND
    async with write_transaction():
        row = await for_update(
            CapabilityRow.select(
                CapabilityRow.user_id, CapabilityRow.github_app_type, CapabilityRow.revoked_at
            ).where(CapabilityRow.id == row_id)
        ).first()
        if row is None:
            return NOT_FOUND
        already_revoked = row["revoked_at"] is not None
        if not already_revoked:
            await CapabilityRow.update({CapabilityRow.revoked_at: now}).where(
                CapabilityRow.id == row_id
            )
        await audit.record(
            AuditAction.GITHUB_CAPABILITY_REVOKED,
            actor=actor,
            now=now,
            subject_user_id=row["user_id"],
            app_type=AppType(row["github_app_type"]),
            detail={"capability_id": str(row_id), "already_revoked": already_revoked},
        )
    return CapabilityRevocation(id=str(row_id), already_revoked=already_revoked)


async def end_for_token(token_id: object, now: datetime) -> None:
    """End the capabilities of a token row being revoked, in the caller's transaction."""
    await CapabilityRow.update({CapabilityRow.revoked_at: now}).where(
        (CapabilityRow.token_id == token_id) & CapabilityRow.revoked_at.is_null()
    )


# Every proxied request starts here: compiled once (see server.storage.reads). The
# token row comes by primary key; a capability's row never outlives it.
_BY_SECRET = PreparedSelect(
    lambda digest: CapabilityRow.select(
        CapabilityRow.id,
        CapabilityRow.user_id,
        CapabilityRow.github_app_type,
        CapabilityRow.github_user_id,
        CapabilityRow.repositories,
        CapabilityRow.access,
        CapabilityRow.issued_by,
        CapabilityRow.expires_at,
        CapabilityRow.revoked_at,
        CapabilityRow.token_id.credential_version.as_alias("credential_version"),
    ).where(CapabilityRow.secret_sha256 == digest),
    arity=1,
)


async def redeem(capability: str, *, now: datetime) -> Capability | None:
    """The live capability `capability` names; None when it is malformed, unknown or ended."""
    if not CAPABILITY.fullmatch(capability):
        return None
    row = await _BY_SECRET.first(secret_sha256(capability))
    if row is None or row["revoked_at"] is not None or row["expires_at"] <= now:
        return None
    repositories = row["repositories"]
    if isinstance(repositories, str):
        repositories = json.loads(repositories)
    return Capability(
        id=str(row["id"]),
        user_id=row["user_id"],
        app_type=AppType(row["github_app_type"]),
        github_user_id=row["github_user_id"],
        repositories=frozenset(repositories),
        access=CapabilityAccess(row["access"]),
        issued_by=row["issued_by"],
        expires_at=row["expires_at"],
        credential_version=row["credential_version"],
    )


async def record_write(
    capability: Capability,
    *,
    route: str,
    method: str,
    repository: str | None,
    path: str,
    status: int | None,
    now: datetime,
) -> None:
    """Audit one write made through the proxy: what it was and GitHub's status (None when
    GitHub did not answer), never the capability or the query string."""
    await audit.record(
        AuditAction.GITHUB_PROXY_WRITE,
        actor=capability.issuer,
        now=now,
        subject_user_id=capability.user_id,
        app_type=capability.app_type,
        detail={
            "capability_id": capability.id,
            "route": route,
            "method": method,
            "repository": repository,
            "path": path,
            "status": status,
        },
    )


# What of a capability's audit events may name the user's GitHub login (an owner in
# owner/name, or in a path): erased with the user.
_NAMING_DETAILS = {
    AuditAction.GITHUB_CAPABILITY_ISSUED: ("repositories",),
    AuditAction.GITHUB_PROXY_WRITE: ("repository", "path"),
}


async def erase_audit_details_of_user(user_id: str) -> None:
    """GDPR erasure, in the purge's transaction: the capability events of the user keep
    their ids, methods and statuses but lose repositories and paths."""
    rows = await AuditEvent.select(AuditEvent.id, AuditEvent.action, AuditEvent.detail).where(
        (AuditEvent.subject_user_id == user_id)
        & AuditEvent.action.is_in([action.value for action in _NAMING_DETAILS])
    )
    for row in rows:
        detail: dict[str, Any] = json.loads(row["detail"]) if row["detail"] else {}
        for key in _NAMING_DETAILS[AuditAction(row["action"])]:
            if key in detail:
                detail[key] = "[ERASED]"
        await AuditEvent.update({AuditEvent.detail: json.dumps(detail, sort_keys=True)}).where(
            AuditEvent.id == row["id"]
        )
