"""Fixtures of the domain tests: GitHub as domain functions reach it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.config import Settings
from server.domain.enums import AppType
from server.domain.github_access import GitHubAccess
from server.github import GitHubClient, new_client_session
from tests.fake_github import FakeGitHub
from tests.helpers import PATIENT_GITHUB_TIMEOUT_SECONDS


@pytest.fixture
async def github(
    settings: Settings, fake_github: FakeGitHub
) -> AsyncIterator[dict[AppType, GitHubAccess]]:
    """Both apps at the fake GitHub, through a client of their own."""
    async with new_client_session(PATIENT_GITHUB_TIMEOUT_SECONDS) as session:
        client = GitHubClient(
            session,
            oauth_base_url=settings.github_oauth_base_url,
            api_base_url=settings.github_api_base_url,
        )
        yield {
            app_type: GitHubAccess(client, settings.github_apps.get(app_type))
            for app_type in AppType
        }
