"""Signing keys from an identity provider's JWKS endpoint (AUTH_JWT_JWKS_URL).

PyJWT's PyJWKClient fetches and parses the key set; it is synchronous
(urllib), so fetches run in a thread and never block the event loop. The
keys are kept for KEY_SET_LIFESPAN_SECONDS. A token naming a key id the set
does not hold (the provider rotated its keys) refetches at once, within a
budget of refetches per minute, so tokens with made-up ids cannot make
ghvault hammer the provider. Failing closed: a token whose key cannot be
had (the endpoint is down and the set expired, or never came) is refused.

A failed fetch spends none of that budget: failures are spaced out by a
backoff of their own (doubling up to MAX_FAILED_FETCH_BACKOFF_SECONDS), so an
outage neither hammers the provider nor keeps ghvault refusing valid tokens
for long after the provider is back. Requests that waited on a fetch share
its outcome, failed or not, instead of each trying again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import jwt
from jwt import PyJWK, PyJWKClient

from server.auth import AuthenticationError

logger = logging.getLogger("ghvault.jwks")

KEY_SET_LIFESPAN_SECONDS = 300.0
FETCH_TIMEOUT_SECONDS = 5.0
REFETCHES_PER_MINUTE = 10
FAILED_FETCH_BACKOFF_SECONDS = 0.5
MAX_FAILED_FETCH_BACKOFF_SECONDS = 5.0


class KeyUnavailable(AuthenticationError):
    """No key can verify this token; like every AuthenticationError, clients see UNAUTHENTICATED."""


class JwksKeys:
    """The identity provider's current signing keys, by key id."""

    def __init__(
        self,
        url: str,
        *,
        lifespan: float = KEY_SET_LIFESPAN_SECONDS,
        timeout: float = FETCH_TIMEOUT_SECONDS,
        refetches_per_minute: int = REFETCHES_PER_MINUTE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # PyJWKClient only fetches and parses here: the cache is ours, so
        # that a rotated key is picked up at once rather than after a cooldown.
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        self._lifespan = lifespan
        self._timeout = timeout
        self._budget = refetches_per_minute
        self._monotonic = monotonic
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        # When the successful fetches of the last minute happened (the refetch budget).
        self._fetches: deque[float] = deque()
        self._attempts = 0
        self._failures = 0  # in a row
        self._retry_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, token: str) -> PyJWK:
        """The key the token's header names; KeyUnavailable when there is none to be had."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise KeyUnavailable("the JWT header is malformed") from None
        if not isinstance(kid, str) or not kid:
            raise KeyUnavailable("the JWT header names no key id (kid)")
        if self._expired() or kid not in self._keys:
            await self._fetch()
        key = self._keys.get(kid)
        if key is None:
            raise KeyUnavailable("the identity provider's key set holds no key with this kid")
        return key

    def _expired(self) -> bool:
        return self._fetched_at is None or self._monotonic() - self._fetched_at >= self._lifespan

    async def _fetch(self) -> None:
        seen = self._attempts
        async with self._lock:
            if self._attempts != seen:
                return  # tried while this request waited: use that outcome
            if self._backing_off():
                self._drop_if_expired()
                return
            if not self._may_fetch():
                self._drop_if_expired()
                logger.warning("JWKS refetch budget spent; not fetching the key set now")
                return
            self._attempts += 1
            try:
                keys = await asyncio.wait_for(
                    asyncio.to_thread(self._client.get_signing_keys), self._timeout + 1
                )
            except (jwt.PyJWTError, OSError, ValueError, TimeoutError) as exc:
                self._failed()
                logger.warning("JWKS fetch failed: %s", type(exc).__name__)
                return
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._fetched_at = self._monotonic()
            self._fetches.append(self._fetched_at)
            self._failures, self._retry_at = 0, None

    def _backing_off(self) -> bool:
        return self._retry_at is not None and self._monotonic() < self._retry_at

    def _failed(self) -> None:
        self._drop_if_expired()
        self._failures += 1
        doublings = min(self._failures - 1, 8)  # far past the cap: 2**n never overflows
        backoff = min(FAILED_FETCH_BACKOFF_SECONDS * 2**doublings, MAX_FAILED_FETCH_BACKOFF_SECONDS)
        self._retry_at = self._monotonic() + backoff

    def _may_fetch(self) -> bool:
        window_start = self._monotonic() - 60
        while self._fetches and self._fetches[0] <= window_start:
            self._fetches.popleft()
        return len(self._fetches) < self._budget

    def _drop_if_expired(self) -> None:
        # Keys past their lifespan are not trusted, however long the outage.
        if self._expired():
            self._keys = {}
