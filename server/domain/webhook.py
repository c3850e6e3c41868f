"""GitHub webhooks: signature check, dedupe, revocation of grants.

GitHub signs the raw body with the app's webhook secret; the secret that
verifies also says which app (standard or lite) sent it. The signature does
not cover the `X-GitHub-Delivery` header, so deliveries are deduplicated on
both the delivery id (GitHub's redeliveries) and the body's SHA-256 (a
captured body re-sent under a made-up id): a signed body acts once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.domain import audit
from server.domain.enums import AppType, AuditAction, RevocationReason
from server.domain.tokens import mark_revoked
from server.identifiers import canonical_github_user_id
from server.storage.tables import GithubWebhookDelivery, GithubWebhookPayload
from server.storage.tables import UserGithubAppToken as Token
from server.storage.transactions import for_update, write_transaction

SIGNATURE_PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(
    header: str | None, body: bytes, secrets: Mapping[AppType, bytes]
) -> AppType | None:
    """The app whose secret signed `body`, or None. Every secret is compared in constant time."""
    # compare_digest refuses non-ASCII text; such a header cannot be a hex digest anyway.
    if not header or not header.isascii() or not header.startswith(SIGNATURE_PREFIX):
        return None
    matched = None
    for app_type, secret in secrets.items():
        if hmac.compare_digest(sign(secret, body), header) and matched is None:
            matched = app_type
    return matched


@dataclass(frozen=True)
class WebhookOutcome:
    handled: bool  # False: an event ghvault does not act on
    duplicate: bool = False
    revoked: int = 0


def _is_authorization_revoked(event: str, payload: Mapping[str, Any]) -> bool:
    return event == "github_app_authorization" and payload.get("action") == "revoked"


def replay_key(app_type: AppType, body: bytes) -> str:
    """What a signed body is remembered by: its SHA-256, per app (each app signs its own)."""
    return hashlib.sha256(app_type.value.encode() + b"\n" + body).hexdigest()


def _sender_id(payload: Mapping[str, Any]) -> str | None:
    sender = payload.get("sender")
    return canonical_github_user_id(sender.get("id") if isinstance(sender, Mapping) else None)


async def handle_delivery(
    *,
    app_type: AppType,
    delivery_id: str,
    body: bytes,
    event: str,
    payload: Mapping[str, Any],
    now: datetime,
) -> WebhookOutcome:
    """Apply one verified delivery; a delivery id or a body seen before changes nothing."""
    if not _is_authorization_revoked(event, payload):
        return WebhookOutcome(handled=False)
    github_user_id = _sender_id(payload)
    if github_user_id is None:
        raise ValueError("github_app_authorization payload has no numeric sender.id")
    async with write_transaction():
        inserted = (
            await GithubWebhookDelivery.insert(
                GithubWebhookDelivery(
                    delivery_id=delivery_id, event=event, handled=True, received_at=now
                )
            )
            .on_conflict(action="DO NOTHING")
            .returning(GithubWebhookDelivery.delivery_id)
        )
        if not inserted:
            return WebhookOutcome(handled=True, duplicate=True)
        first_time = (
            await GithubWebhookPayload.insert(
                GithubWebhookPayload(
                    body_sha256=replay_key(app_type, body), delivery_id=delivery_id, received_at=now
                )
            )
            .on_conflict(action="DO NOTHING")
            .returning(GithubWebhookPayload.body_sha256)
        )
        if not first_time:
            return WebhookOutcome(handled=True, duplicate=True)
        rows = await for_update(
            Token.select(Token.id, Token.user_id, Token.credential_version).where(
                Token.of_github_account(github_user_id, app_type) & Token.revoked_at.is_null()
            )
        )
        for row in rows:
            await mark_revoked(
                row["id"], row["credential_version"], RevocationReason.USER_REVOKED, now
            )
            await audit.record(
                AuditAction.GITHUB_WEBHOOK_REVOKED,
                actor=None,
                now=now,
                subject_user_id=row["user_id"],
                app_type=app_type,
                detail={"delivery_id": delivery_id, "reason": RevocationReason.USER_REVOKED},
            )
    return WebhookOutcome(handled=True, revoked=len(rows))
