"""The vocabulary shared by storage, domain and API.

Values are what the database stores; the GraphQL layer exposes the member
names (``STANDARD``, ``USER_REVOKED``, ...).
"""

from enum import StrEnum


class AppType(StrEnum):
    """Which of the two GitHub Apps a token was granted through."""

    STANDARD = "standard"
    LITE = "lite"


class Role(StrEnum):
    """What a principal may do (see graphql/permissions.py)."""

    USER = "user"
    ADMIN = "admin"
    SERVICE = "service"


class TokenKind(StrEnum):
    """The two tokens of a grant, each in its own column."""

    ACCESS = "access"
    REFRESH = "refresh"


class RevocationReason(StrEnum):
    """Why a token row was revoked."""

    USER_REVOKED = "user_revoked"
    REFRESH_FAILED = "refresh_failed"
    ADMIN = "admin"
    GITHUB_REJECTED = "github_rejected"  # reported rejected, GitHub agreed, and not refreshable


class TokenState(StrEnum):
    """A token's state at a given time, derived from its row (domain/status.py)."""

    NOT_CONNECTED = "not_connected"
    ACTIVE = "active"
    EXPIRED = "expired"
    REFRESH_EXPIRED = "refresh_expired"
    REVOKED = "revoked"


class CapabilityAccess(StrEnum):
    """What a GitHub capability lets its holder do through the proxy."""

    READ = "read"  # GET and HEAD; git fetch and clone
    WRITE = "write"  # every method; git push too


class AuditAction(StrEnum):
    """What an audit event records."""

    TOKEN_STORED = "token_stored"
    TOKEN_REVOKED = "token_revoked"
    TOKEN_REFRESHED = "token_refreshed"
    TOKEN_REFRESH_FAILED = "token_refresh_failed"
    TOKEN_CHECKED_OUT = "token_checked_out"
    TOKEN_DISCONNECTED = "token_disconnected"
    USER_PURGED = "user_purged"
    KEYS_REWRAPPED = "keys_rewrapped"
    GITHUB_WEBHOOK_REVOKED = "github_webhook_revoked"
    TOKEN_DECRYPTION_FAILED = "token_decryption_failed"
    TOKEN_REJECTION_REPORTED = "token_rejection_reported"
    GITHUB_CAPABILITY_ISSUED = "github_capability_issued"
    GITHUB_CAPABILITY_REVOKED = "github_capability_revoked"
    GITHUB_PROXY_WRITE = "github_proxy_write"


class ErrorCode(StrEnum):
    """Why an operation did not succeed, returned as data (`Refusal.code`)."""

    NOT_FOUND = "not_found"
    INVALID_INPUT = "invalid_input"
    INVALID_TOKEN_FORMAT = "invalid_token_format"
    ALREADY_CONNECTED_TO_ANOTHER_USER = "already_connected_to_another_user"
    NOT_CONNECTED = "not_connected"
    TOKEN_REVOKED = "token_revoked"
    REFRESH_FAILED = "refresh_failed"
    GITHUB_UNAVAILABLE = "github_unavailable"
    INVALID_STATE = "invalid_state"
    STATE_EXPIRED = "state_expired"
    STATE_ALREADY_USED = "state_already_used"
    ACCOUNT_MISMATCH = "account_mismatch"
    TOKEN_UNREADABLE = "token_unreadable"
    RATE_LIMITED = "rate_limited"


class RejectionOutcome(StrEnum):
    """What a report that GitHub rejected a handed-out token led to (domain/rejection.py)."""

    STILL_VALID = "still_valid"
    REFRESHED = "refreshed"
    REVOKED = "revoked"
    STALE = "stale"


class RequestErrorCode(StrEnum):
    """`extensions.code` of a top-level GraphQL error: the request itself was refused."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    INVALID_INPUT = ErrorCode.INVALID_INPUT.name
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"  # over the document budget (graphql/budget.py)
    INTERNAL = "INTERNAL"
    # Something ghvault depends on (the database, GitHub) is out: retry later (HTTP 503).
    UNAVAILABLE = "UNAVAILABLE"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
