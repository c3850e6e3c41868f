"""Signing keys from an identity provider's JWKS endpoint (AUTH_JWT_JWKS_URL).

PyJWT's PyJWKClient fetches and parses the key set; it is synchronous
(urllib), so fetches run in a thread and never block the event loop. The
keys are kept for KEY_SET_LIFESPAN_SECONDS. A token naming a key id the set
does not hold (the provider rotated its keys) refetches at once, within a
budget of refetches per minute, so tokens with made-up ids cannot make
ghvault hammer the provider. Failing closed: a token whose key cannot be
had (the endpoint is down and the set expired, or never came) is refused.
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
        self._fetches: deque[float] = deque()
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
        seen = self._fetched_at
        async with self._lock:
            if self._fetched_at != seen:
                return  # fetched while this request waited: use that
            if not self._may_fetch():
                self._drop_if_expired()
                logger.warning("JWKS refetch budget spent; not fetching the key set now")
                return
            self._fetches.append(self._monotonic())
            try:
                keys = await asyncio.wait_for(
                    asyncio.to_thread(self._client.get_signing_keys), self._timeout + 1
                )
            except (jwt.PyJWTError, OSError, ValueError, TimeoutError) as exc:
                self._drop_if_expired()
                logger.warning("JWKS fetch failed: %s", type(exc).__name__)
                return
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._fetched_at = self._monotonic()

    def _may_fetch(self) -> bool:
        window_start = self._monotonic() - 60
        while self._fetches and self._fetches[0] <= window_start:
            self._fetches.popleft()
        return len(self._fetches) < self._budget

    def _drop_if_expired(self) -> None:
        # Keys past their lifespan are not trusted, however long the outage.
        if self._expired():
            self._keys = {}
