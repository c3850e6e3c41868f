"""Principals of bearer JWTs already verified, reused until the token expires.

A frontend sends the same JWT with every request; verifying its signature
and claims again each time costs more than the status read it guards. The
cache is keyed by the whole token string and the verification settings
(key, algorithms, issuer, audience), so a token that differs in any byte,
or settings that differ, miss it and are verified in full. An entry is
never used at or after the token's `exp`; only tokens that passed
verification are stored. Bounded: the oldest entries go first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.auth import VerifiedToken

MAX_ENTRIES = 10_000


class VerifiedTokens:
    def __init__(
        self, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        # (settings, token) -> what verifying it found; insertion order.
        self._entries: dict[tuple[Hashable, str], VerifiedToken] = {}

    def get(self, settings: Hashable, token: str) -> VerifiedToken | None:
        key = (settings, token)
        verified = self._entries.get(key)
        if verified is None:
            return None
        if self.clock() >= verified.expires_at:
            del self._entries[key]
            return None
        return verified

    def put(self, settings: Hashable, token: str, verified: VerifiedToken) -> None:
        if len(self._entries) >= self.max_entries:
            # Expired entries go first; if that is not enough, the oldest tenth,
            # so a full cache sweeps once per many inserts, not on each.
            now = self.clock()
            expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
            for key in expired:
                del self._entries[key]
            if len(self._entries) >= self.max_entries:
                for key in list(self._entries)[: max(1, self.max_entries // 10)]:
                    del self._entries[key]
        self._entries[(settings, token)] = verified

    def __len__(self) -> int:
        return len(self._entries)
