"""Fixtures of the proxy tests: a git host beside the fake GitHub, and the app pointed at both.

`proxy_env` is the extra environment of the app under test (limits, base
URLs), for a test module or a test to override.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.config import Settings
from tests.fake_github import FakeGitHub
from tests.git_host import GitHost, start_git_host
from tests.helpers import Database, base_env, github_env


@pytest.fixture
def proxy_env() -> dict[str, str]:
    return {}


@pytest.fixture
async def git_host(fake_github: FakeGitHub, tmp_path: Path) -> AsyncIterator[GitHost]:
    async with start_git_host(tmp_path / "git-host", fake_github.is_access_token_valid) as host:
        yield host


@pytest.fixture
def settings(
    database: Database, fake_github: FakeGitHub, git_host: GitHost, proxy_env: dict[str, str]
) -> Settings:
    env = {
        "DATABASE_URL": database.url,
        "GITHUB_GIT_BASE_URL": git_host.base_url,
        **github_env(fake_github),
        **proxy_env,
    }
    return Settings.from_env(base_env(**env))
