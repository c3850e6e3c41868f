"""What every resolver gets: the caller, the settings, the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web

from server.auth import Principal
from server.clock import Clock
from server.config import Settings
from server.domain import rejection, users
from server.domain.changes import TokenChanges
from server.domain.enums import AppType
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.domain.rate_limits import RateLimit
from server.github import GitHubClient

# Ids created this process; bounded so a flood of distinct users cannot grow it forever.
KNOWN_USERS_LIMIT = 100_000


@dataclass
class Context:
    request: web.Request
    response: web.StreamResponse
    settings: Settings
    clock: Clock
    request_id: str
    principal: Principal | None
    github: GitHubClient | None = None
    known_users: set[str] = field(default_factory=set)
    refresh_locks: KeyedLocks = field(default_factory=KeyedLocks)
    rejection_reports: RateLimit = field(default_factory=rejection.report_limit)
    token_changes: TokenChanges = field(default_factory=TokenChanges)
    # A websocket's connection_init payload (Strawberry sets it); None over HTTP.
    connection_params: dict[str, object] | None = None

    def now(self) -> datetime:
        return self.clock()

    def github_for(self, app_type: AppType) -> GitHubAccess:
        return GitHubAccess(client=self.github, app=self.settings.github_apps.get(app_type))

    def github_for_all(self) -> dict[AppType, GitHubAccess]:
        return {app_type: self.github_for(app_type) for app_type in AppType}

    async def ensure_user(self, principal: Principal) -> None:
        """Create the user row on its first request (once per process)."""
        if principal.id in self.known_users:
            return
        await users.ensure_user(
            principal.id, now=self.now(), email=principal.email, display_name=principal.name
        )
        if len(self.known_users) >= KNOWN_USERS_LIMIT:
            self.known_users.clear()
        self.known_users.add(principal.id)
