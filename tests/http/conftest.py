"""Fixtures of the HTTP tests: a migrated SQLite file (and the app on it), a headless Chromium.

Without Chromium the browser tests are skipped, loudly, unless GHVAULT_REQUIRE_BROWSER=1
(CI sets it, and .ci/run installs Chromium), which makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.config import Settings
from server.http.app import create_app
from tests.browser import Browser, find_chromium, launch
from tests.helpers import GraphQLClient, base_env

_browser_skip_reason: str | None = None


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated SQLite database of its own, for tests that need no second engine."""
    path = tmp_path / "ghvault.sqlite"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
async def sqlite_gql(aiohttp_client: Any, sqlite_url: str) -> GraphQLClient:
    """The app on SQLite alone, for what happens at the edge, before any storage."""
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url))
    return GraphQLClient(await aiohttp_client(create_app(settings)))


@pytest.fixture(scope="session")
def chromium() -> str:
    global _browser_skip_reason
    executable = find_chromium()
    if executable is not None:
        return executable
    _browser_skip_reason = "no chromium on PATH (apt-get install chromium)"
    if os.environ.get("GHVAULT_REQUIRE_BROWSER", "") in ("1", "true", "yes"):
        pytest.fail(f"{_browser_skip_reason}, and GHVAULT_REQUIRE_BROWSER is set")
    pytest.skip(f"browser test skipped: {_browser_skip_reason}")


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with launch(chromium) as browser:
        yield browser


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _browser_skip_reason:
        terminalreporter.write_sep(
            "!", f"Browser tests SKIPPED: {_browser_skip_reason}", yellow=True, bold=True
        )
