"""GraphiQL over plain HTTP: the page and its assets come from the package, under a CSP."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.config import Settings
from server.http.app import create_app
from server.http.graphiql import STATIC_DIR
from tests.helpers import base_env

VENDOR_DIR = STATIC_DIR / "vendor"


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> TestClient:
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url))
    return await aiohttp_client(create_app(settings))


async def test_page_forbids_everything_but_its_own_origin(client: TestClient) -> None:
    """Make sure the page's CSP allows scripts, styles and requests from 'self' only."""
    response = await client.get("/graphql", headers={"Accept": "text/html"})

    assert response.status == 200
    assert response.content_type == "text/html"
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src"):
        assert policy[directive] == "'self'", directive
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_page_loads_only_assets_the_server_serves(client: TestClient) -> None:
    """Make sure every script and stylesheet of the page is a local path that answers 200
    with its type, and the page has no inline script for the CSP to refuse."""
    page = await (await client.get("/graphql", headers={"Accept": "text/html"})).text()
    sources = re.findall(r'<script src="([^"]+)"', page)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)

    assert "<script>" not in page
    assert "http" not in page.replace("http-equiv", "")
    assert (len(sources), len(styles)) == (5, 3)
    for url, kind in [(url, "text/javascript") for url in sources] + [
        (url, "text/css") for url in styles
    ]:
        response = await client.get(url)
        assert (url, response.status, response.content_type) == (url, 200, kind)
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/index.html",
        "/graphiql/vendor/missing.js",
        "/graphiql/../graphiql.py",
        "/graphiql/%2e%2e/graphiql.py",
        "/graphiql/vendor/%2e%2e/%2e%2e/app.py",
    ],
)
async def test_only_the_vendored_files_are_served(client: TestClient, path: str) -> None:
    """Make sure a name outside the asset set, or a way out of it, is a 404."""
    response = await client.get(path)

    assert response.status == 404


def test_each_vendored_build_has_its_licence_and_pinned_version() -> None:
    """Make sure every vendored file is listed with its package, version and hash, and each
    package's licence travels with it."""
    listed = {
        line.split()[0]: line.split()[1]
        for line in (VENDOR_DIR / "VERSIONS").read_text().splitlines()
        if not line.startswith("#")
    }
    builds = {path.name for path in VENDOR_DIR.iterdir() if path.suffix in (".js", ".css")}

    assert set(listed) == builds
    for name in builds:
        package = name.split(".")[0]
        assert (VENDOR_DIR / f"{package}.LICENSE").read_text().startswith("MIT License"), name
    assert all(
        re.fullmatch(r"(@graphiql/)?[a-z-]+@\d+\.\d+\.\d+", spec) for spec in listed.values()
    )


async def test_assets_are_not_served_without_graphiql(aiohttp_client: Any, sqlite_url: str) -> None:
    """Make sure turning GraphiQL off removes its assets as well as the page."""
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url, GRAPHIQL_ENABLED="false"))
    client = await aiohttp_client(create_app(settings))

    assert (await client.get("/graphql", headers={"Accept": "text/html"})).status == 405
    assert (await client.get("/graphiql/vendor/graphiql.min.js")).status == 404
