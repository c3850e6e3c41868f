"""Principals: who is calling, from an `Authorization: Bearer <JWT>` header."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from server.config import JwtConfig
from server.domain.enums import Role

MAX_SUB_LENGTH = 255


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


def authenticate(authorization: str | None, config: JwtConfig) -> Principal:
    """Verify the bearer JWT and return its principal."""
    if not authorization:
        raise AuthenticationError("no Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization is not a Bearer token")
    key = config.secret if config.secret is not None else config.public_key
    try:
        claims = jwt.decode(
            token.strip(),
            key=key,
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
    return _principal_from_claims(claims)


def _principal_from_claims(claims: dict[str, object]) -> Principal:
    sub, role = claims.get("sub"), claims.get("role")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
        raise AuthenticationError("JWT sub must be a non-empty string")
    try:
        parsed_role = Role(role)
    except ValueError:
        raise AuthenticationError("JWT role must be user, admin or service") from None
    email, name = claims.get("email"), claims.get("name")
    return Principal(
        id=sub,
        role=parsed_role,
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
    )


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
