"""Piccolo tables.

Constraints Piccolo cannot express portably (the composite unique indexes and
the app-type CHECK) live in the migration, as raw SQL valid on both engines.
"""

from piccolo.columns import (
    JSON,
    UUID,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.custom_types import Combinable
from piccolo.table import Table

from server.domain.enums import AppType, CapabilityAccess, RevocationReason, TokenKind


class User(Table, tablename="users"):
    """A person whose tokens are kept; created on first use."""

    id = Text(primary_key=True, help_text="The caller's user id (a JWT `sub`).")
    email = Text(null=True, default=None, secret=True, help_text="PII; nulled by purge.")
    display_name = Text(null=True, default=None, secret=True, help_text="PII; nulled by purge.")
    created_at = Timestamptz(default=TimestamptzNow())
    purged_at = Timestamptz(null=True, default=None)


class UserGithubAppToken(Table, tablename="user_github_app_tokens"):
    """One row per (user, app type): the encrypted token pair and its state."""

    id = UUID(primary_key=True)
    user_id = ForeignKey(User, on_delete=OnDelete.cascade, null=False)
    github_app_type = Text(choices=AppType)
    github_user_id = Text(index=True)
    github_login = Text(secret=True, help_text="PII.")
    github_email = Text(null=True, default=None, secret=True, help_text="PII.")
    access_token_encrypted = Text(
        null=True, default=None, secret=True, help_text="Envelope `v1:<key_id>:...`; never plain."
    )
    access_token_expires_at = Timestamptz(null=True, default=None)
    refresh_token_encrypted = Text(
        null=True, default=None, secret=True, help_text="Envelope `v1:<key_id>:...`; never plain."
    )
    refresh_token_expires_at = Timestamptz(null=True, default=None)
    credential_version = Integer(default=1, help_text="+1 on every store and refresh.")
    revoked_at = Timestamptz(null=True, default=None)
    revocation_reason = Text(null=True, default=None, choices=RevocationReason)
    last_used_at = Timestamptz(null=True, default=None)
    last_refreshed_at = Timestamptz(null=True, default=None)
    leased_until = Timestamptz(
        null=True,
        default=None,
        help_text="End of the latest window promised on this credential_version; "
        "nothing refreshes before it. Reset by every store, refresh and revocation.",
    )
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())

    @classmethod
    def of(cls, user_id: str, app_type: AppType) -> Combinable:
        """Where-condition for this user's token of this app type (at most one row)."""
        return (cls.user_id == user_id) & (cls.github_app_type == app_type.value)

    @classmethod
    def of_github_account(cls, github_user_id: str, app_type: AppType) -> Combinable:
        """Where-condition for the tokens of this GitHub account through this app type."""
        return (cls.github_user_id == github_user_id) & (cls.github_app_type == app_type.value)

    @classmethod
    def ciphertext_column(cls, kind: TokenKind) -> Text:
        """The column holding the encrypted token of `kind`."""
        if kind is TokenKind.ACCESS:
            return cls.access_token_encrypted
        return cls.refresh_token_encrypted


class AuditEvent(Table, tablename="audit_events"):
    """Append-only; ids and non-sensitive facts only, never PII or tokens."""

    id = Serial(primary_key=True)
    occurred_at = Timestamptz(default=TimestamptzNow())
    action = Text()
    actor_role = Text(null=True, default=None)
    actor_id = Text(null=True, default=None)
    subject_user_id = Text(null=True, default=None, index=True)
    github_app_type = Text(null=True, default=None)
    detail = JSON(null=True, default=None)


class OAuthState(Table, tablename="oauth_states"):
    """A pending connect: single use, bound to its user, short-lived."""

    state_hash = Text(primary_key=True, help_text="SHA-256 of the state; the state is a bearer.")
    user_id = ForeignKey(User, on_delete=OnDelete.cascade, null=False)
    github_app_type = Text(choices=AppType)
    code_verifier = Text(
        null=True,
        default=None,
        secret=True,
        help_text="PKCE verifier; cleared once used, and useless without GitHub's code.",
    )
    redirect_uri = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)


class GithubWebhookDelivery(Table, tablename="github_webhook_deliveries"):
    """Seen `X-GitHub-Delivery` ids, so a redelivery changes nothing."""

    delivery_id = Text(primary_key=True)
    event = Text()
    handled = Boolean(default=False)
    received_at = Timestamptz(default=TimestamptzNow())


class GithubWebhookPayload(Table, tablename="github_webhook_payloads"):
    """Signed bodies already acted on: GitHub's signature covers the body, not the
    delivery id, so a captured body re-sent under a new id must change nothing."""

    body_sha256 = Text(
        primary_key=True, help_text="Hex SHA-256 of the app type and the raw, signed body."
    )
    delivery_id = Text(help_text="The delivery that first carried it.")
    received_at = Timestamptz(default=TimestamptzNow())


class GithubCapability(Table, tablename="github_capabilities"):
    """A short-lived stand-in for a user's token, redeemed only by the GitHub proxy.

    Deleted with its token row (disconnect, purge); revoking the token ends it.
    """

    id = UUID(primary_key=True)
    secret_sha256 = Text(
        unique=True, help_text="Hex SHA-256 of the capability; the capability is a bearer."
    )
    token_id = ForeignKey(
        UserGithubAppToken,
        on_delete=OnDelete.cascade,
        null=False,
        index=True,
        help_text="The token it stands for.",
    )
    user_id = Text()
    github_app_type = Text(choices=AppType)
    github_user_id = Text(
        help_text="The GitHub account it acts as; a token of another account does not serve it."
    )
    repositories = JSON(
        default="[]",
        secret=True,
        help_text="owner/name, lower-cased ([] for all the token reaches); may name the login.",
    )
    access = Text(choices=CapabilityAccess)
    issued_by = Text(help_text="The SERVICE principal that issued it.")
    issued_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
    revoked_at = Timestamptz(null=True, default=None)


TABLES: tuple[type[Table], ...] = (
    User,
    UserGithubAppToken,
    AuditEvent,
    OAuthState,
    GithubWebhookDelivery,
    GithubWebhookPayload,
    GithubCapability,
)
