"""GitHub as the domain reaches it: the shared client and one app's credentials.

Either is None when that app is not configured on this server; every
capability that needs GitHub asks `configured` for both, and those that must
refuse give the same answer, `not_configured`.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.enums import AppType, ErrorCode
from server.domain.errors import Refusal
from server.github import GitHubApp, GitHubClient


@dataclass(frozen=True)
class ConfiguredGitHub:
    client: GitHubClient
    app: GitHubApp


@dataclass(frozen=True)
class GitHubAccess:
    client: GitHubClient | None
    app: GitHubApp | None

    @property
    def configured(self) -> ConfiguredGitHub | None:
        """The client and the app's credentials; None when either is missing."""
        if self.client is None or self.app is None:
            return None
        return ConfiguredGitHub(self.client, self.app)


def not_configured(app_type: AppType) -> Refusal:
    """The refusal of anything that needs an app this server has no credentials for.

    Not GITHUB_UNAVAILABLE: retrying does not help until an operator configures the app.
    """
    return Refusal(
        ErrorCode.INVALID_INPUT,
        f"The {app_type.name} GitHub App is not configured on this server.",
        "appType",
    )
