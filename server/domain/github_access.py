"""GitHub as the domain reaches it: the shared client and one app's credentials.

Either is None when that app is not configured on this server; every
capability that needs GitHub asks `configured`, and those that must refuse
give the same answer, `not_configured`.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.enums import AppType, ErrorCode
from server.domain.errors import Refusal
from server.github import GitHubApp, GitHubClient


@dataclass(frozen=True)
class GitHubAccess:
    client: GitHubClient | None
    app: GitHubApp | None

    @property
    def configured(self) -> bool:
        return self.client is not None and self.app is not None


def not_configured(app_type: AppType) -> Refusal:
    """The refusal of anything that needs an app this server has no credentials for.

    Not GITHUB_UNAVAILABLE: retrying does not help until an operator configures the app.
    """
    return Refusal(
        ErrorCode.INVALID_INPUT,
        f"The {app_type.name} GitHub App is not configured on this server.",
        "appType",
    )
