"""The cache of verified JWTs: reused until exp, never across tokens or keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from server.auth import AuthenticationError, Principal, VerifiedToken, authenticate, mint_token
from server.config import JwtConfig
from server.domain.enums import Role
from server.jwt_cache import VerifiedTokens

SECRET = b"test-jwt-secret-that-is-long-enough-0123456789"
OTHER_SECRET = b"another-jwt-secret-that-is-long-enough-98765"
CONFIG = JwtConfig(secret=SECRET)


def token_for(sub: str, *, secret: bytes = SECRET, ttl: timedelta = timedelta(hours=1)) -> str:
    return mint_token(secret, sub=sub, role=Role.USER, now=datetime.now(UTC), ttl=ttl)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_cached_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure the second request with the same JWT skips the signature check."""
    cache = VerifiedTokens()
    token = token_for("alice")
    assert authenticate(bearer(token), CONFIG, cache=cache) == Principal("alice", Role.USER)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("verified again")

    monkeypatch.setattr(jwt, "decode", refuse)
    assert authenticate(bearer(token), CONFIG, cache=cache) == Principal("alice", Role.USER)


def test_an_expired_token_is_rejected_even_when_cached() -> None:
    """Make sure an entry made while the token was valid does not outlive its exp."""
    cache = VerifiedTokens()
    token = token_for("alice", ttl=timedelta(seconds=-5))
    expired_at = datetime.now(UTC).timestamp() - 5
    # As if cached while it was still valid.
    cache.put((CONFIG, None), token, VerifiedToken(Principal("alice", Role.USER), expired_at))

    with pytest.raises(AuthenticationError, match="ExpiredSignatureError"):
        authenticate(bearer(token), CONFIG, cache=cache)
    assert len(cache) == 0


def test_an_entry_is_dropped_at_exp() -> None:
    """Make sure the cache answers up to the token's exp and not at or after it."""
    now = [1_000.0]
    cache = VerifiedTokens(clock=lambda: now[0])
    verified = VerifiedToken(Principal("alice", Role.USER), 1_060.0)
    cache.put(CONFIG, "token", verified)

    now[0] = 1_059.9
    assert cache.get(CONFIG, "token") == verified
    now[0] = 1_060.0
    assert cache.get(CONFIG, "token") is None


def test_a_different_key_is_a_different_entry() -> None:
    """Make sure a token cached under one signing key is not accepted under another."""
    cache = VerifiedTokens()
    token = token_for("alice")
    authenticate(bearer(token), CONFIG, cache=cache)

    with pytest.raises(AuthenticationError, match="InvalidSignatureError"):
        authenticate(bearer(token), JwtConfig(secret=OTHER_SECRET), cache=cache)


def test_a_forged_signature_misses_the_genuine_tokens_entry() -> None:
    """Make sure the same claims signed with another key are verified, and refused."""
    cache = VerifiedTokens()
    claims = {"sub": "alice", "role": "user", "exp": int(time.time()) + 3600}
    genuine = jwt.encode(claims, SECRET, algorithm="HS256")
    forged = jwt.encode(claims, OTHER_SECRET, algorithm="HS256")
    assert genuine.split(".")[:2] == forged.split(".")[:2]
    authenticate(bearer(genuine), CONFIG, cache=cache)

    with pytest.raises(AuthenticationError, match="InvalidSignatureError"):
        authenticate(bearer(forged), CONFIG, cache=cache)


def test_rejected_tokens_are_not_cached() -> None:
    """Make sure only tokens that passed verification are kept."""
    cache = VerifiedTokens()
    with pytest.raises(AuthenticationError):
        authenticate(bearer(token_for("alice", secret=OTHER_SECRET)), CONFIG, cache=cache)
    assert len(cache) == 0


def test_the_cache_stays_within_its_bound() -> None:
    """Make sure a stream of distinct valid tokens cannot grow the cache past its limit."""
    cache = VerifiedTokens(max_entries=50)
    for index in range(200):
        authenticate(bearer(token_for(f"user-{index}")), CONFIG, cache=cache)
        assert len(cache) <= 50
    assert authenticate(bearer(token_for("last")), CONFIG, cache=cache).id == "last"
