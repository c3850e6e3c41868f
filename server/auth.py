"""Principals: who is calling, from an `Authorization: Bearer <JWT>` header."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from jwt import PyJWK

from server.config import JwtConfig
from server.domain.enums import Role
from server.identifiers import MAX_USER_ID_LENGTH, is_user_id
from server.jwt_cache import VerifiedTokens
from server.text import UNSTORABLE_TEXT, is_storable

ROLE_VALUES = frozenset(role.value for role in Role)


class AuthenticationError(Exception):
    """Missing, malformed, expired or wrongly signed credentials.

    The message is for the log; clients only ever see UNAUTHENTICATED.
    """


@dataclass(frozen=True)
class Principal:
    id: str
    role: Role
    email: str | None = None
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class VerifiedToken:
    """A bearer JWT that passed verification: whom it speaks for, and until when."""

    principal: Principal
    expires_at: float  # its `exp`, in POSIX seconds


def authenticate(
    authorization: str | None,
    config: JwtConfig,
    *,
    key: PyJWK | None = None,
    cache: VerifiedTokens | None = None,
) -> Principal:
    """Verify the bearer JWT and return its principal (see `verify`)."""
    return verify(authorization, config, key=key, cache=cache).principal


def verify(
    authorization: str | None,
    config: JwtConfig,
    *,
    key: PyJWK | None = None,
    cache: VerifiedTokens | None = None,
) -> VerifiedToken:
    """Verify the bearer JWT: the one path for requests and sockets alike.

    `key` is the identity provider's key for this token (from its JWKS);
    without one, the configured secret or public key verifies. With
    `cache`, a token verified before with the same settings and key is not
    verified again until its `exp` (see server.jwt_cache).
    """
    token = bearer_token(authorization)
    verifier: PyJWK | bytes | str | None = key
    if verifier is None:
        verifier = config.secret if config.secret is not None else config.public_key
    if verifier is None:
        raise AuthenticationError("no key to verify the JWT with")
    settings = (config, key)
    if cache is not None and (verified := cache.get(settings, token)) is not None:
        return verified
    try:
        claims = jwt.decode(
            token,
            key=verifier,
            algorithms=list(config.algorithms),
            issuer=config.issuer,
            audience=config.audience,
            options={
                "require": ["exp", "sub"],
                "verify_aud": config.audience is not None,
                "verify_iss": config.issuer is not None,
            },
        )
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"invalid JWT: {type(exc).__name__}") from None
    verified = VerifiedToken(_principal_from_claims(claims, config.role_claim), _expiry(claims))
    if cache is not None:
        cache.put(settings, token, verified)
    return verified


def bearer_token(authorization: str | None) -> str:
    """The JWT of an `Authorization: Bearer <JWT>` header."""
    if not authorization:
        raise AuthenticationError("no Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization is not a Bearer token")
    return token.strip()


def _expiry(claims: dict[str, object]) -> float:
    """`exp` as a finite number of seconds, or the token is refused.

    PyJWT takes any value `int()` accepts, numeric strings included, and a
    far-future `exp` (10**13) is past what datetime can hold: RFC 7519's
    NumericDate is a JSON number, and this one float is all anyone reads.
    """
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AuthenticationError("JWT exp must be a number")
    try:
        expires_at = float(exp)
    except OverflowError:
        expires_at = math.inf
    if not math.isfinite(expires_at):
        raise AuthenticationError("JWT exp must be a finite number")
    return expires_at


def _principal_from_claims(claims: dict[str, object], role_claim: str) -> Principal:
    sub = claims.get("sub")
    if not is_user_id(sub):
        # Checked like a userId argument, before the principal can reach storage.
        raise AuthenticationError(f"JWT sub must be 1 to {MAX_USER_ID_LENGTH} printable characters")
    parsed_role = _role(claims, role_claim)
    email, name = _profile_claim(claims, "email"), _profile_claim(claims, "name")
    return Principal(
        id=sub,
        role=parsed_role,
        email=email,
        name=name,
    )


def _profile_claim(claims: dict[str, object], name: str) -> str | None:
    """An optional text claim; one no database can store refuses the token, like a bad sub."""
    value = claims.get(name)
    if not isinstance(value, str):
        return None
    if not is_storable(value):
        raise AuthenticationError(f"JWT claim {name} must not contain {UNSTORABLE_TEXT}")
    return value


def _role(claims: dict[str, object], role_claim: str) -> Role:
    """The one ghvault role the configured claim names.

    Providers put roles in namespaced claims (`https://example.com/roles`),
    nested ones (`realm_access.roles`) and lists holding their own roles
    too: those are ignored, but two ghvault roles at once are ambiguous.
    """
    value = _claim(claims, role_claim)
    candidates = value if isinstance(value, list) else [value]
    roles = {Role(item) for item in candidates if isinstance(item, str) and item in ROLE_VALUES}
    if len(roles) != 1:
        raise AuthenticationError(
            f"JWT claim {role_claim} must name exactly one of user, admin or service"
        )
    return roles.pop()


def _claim(claims: dict[str, object], name: str) -> object:
    """A claim by its literal name, else by a dotted path into nested objects."""
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def mint_token(
    secret: bytes,
    *,
    sub: str,
    role: Role,
    now: datetime,
    ttl: timedelta,
    issuer: str | None = None,
    audience: str | None = None,
    extra: dict[str, object] | None = None,
) -> str:
    """An HS256 JWT, for development and tests (`ghvault dev-token`)."""
    claims: dict[str, object] = {
        "sub": sub,
        "role": role.value,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        **(extra or {}),
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
