"""The user's token for a proxied request: where the proxy meets the token store.

Every proxied request needs the user's current access token, and a window
(a lease) on it, so that no refresh by ghvault kills it while the request
is in flight. A checkout gives both, for the default lease (10 minutes),
at the cost of a write transaction (the window, the token's last use, an
audit event): most of what a proxied GET costs, and a worker's requests
come by the hundred. So the token a capability checked out serves its next
requests while it is still the stored one and its window has
REQUEST_ALLOWANCE left for them: the capability is redeemed together with
its token row's credential_version (one indexed read, on every request),
and a new version, a window running out, or a minute passed all mean a
fresh checkout. A token stored or refreshed meanwhile (by another process,
the sweep, a report) thus reaches the very next request, and the token's
use is still noted and audited once a minute per capability.

When GitHub answers 401 anyway (the token died in a way ghvault did not
see), `rejected` forgets it and reports it: ghvault asks GitHub about that
credential version and refreshes it, or revokes it (server/domain/rejection.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from server.crypto import Keyring
from server.domain import checkout, rejection
from server.domain.checkout import CheckedOutToken
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.domain.rate_limits import RateLimit
from server.domain.rejection import RejectionReport
from server.github_proxy.capabilities import Capability

REUSE = timedelta(minutes=1)
REQUEST_ALLOWANCE = timedelta(minutes=5)
MAX_HELD = 10_000


@dataclass(frozen=True)
class _Held:
    token: CheckedOutToken
    until: datetime


class ProxyTokens:
    """Checked-out tokens by capability id, each for at most REUSE."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    async def token_for(
        self,
        capability: Capability,
        *,
        now: datetime,
        keyring: Keyring,
        github: GitHubAccess,
        locks: KeyedLocks,
    ) -> CheckedOutToken | Refusal:
        held = self._held.get(capability.id)
        if (
            held is not None
            and held.token.credential_version == capability.credential_version
            and now < held.until
        ):
            return held.token
        # Checked out as the issuing service would: refreshed first near expiry, single flight.
        token = await checkout.checkout_token(
            capability.issuer,
            capability.user_id,
            capability.app_type,
            now=now,
            keyring=keyring,
            github=github,
            locks=locks,
        )
        if isinstance(token, Refusal):
            self._held.pop(capability.id, None)
        else:
            self._keep(capability, token, now)
        return token

    def _keep(self, capability: Capability, token: CheckedOutToken, now: datetime) -> None:
        # Each checkout holds a window (the default lease) on the token; a request
        # started with a kept token has at least REQUEST_ALLOWANCE of it left.
        until = min(now + REUSE, capability.expires_at, token.usable_until - REQUEST_ALLOWANCE)
        if until <= now:
            self._held.pop(capability.id, None)
            return
        if len(self._held) >= MAX_HELD:
            self._held = {key: held for key, held in self._held.items() if held.until > now}
            if len(self._held) >= MAX_HELD:
                self._held.clear()  # costs checkouts, never a wrong token
        self._held[capability.id] = _Held(token, until)

    async def rejected(
        self,
        capability: Capability,
        token: CheckedOutToken,
        *,
        now: datetime,
        keyring: Keyring,
        github: GitHubAccess,
        locks: KeyedLocks,
        limit: RateLimit,
    ) -> RejectionReport | Refusal:
        """GitHub refused `token`: forget it, and report its version as rejected."""
        self._held.pop(capability.id, None)
        return await rejection.report_rejected(
            capability.issuer,
            capability.user_id,
            capability.app_type,
            token.credential_version,
            now=now,
            keyring=keyring,
            github=github,
            locks=locks,
            limit=limit,
        )
