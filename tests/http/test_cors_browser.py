"""CORS in a real headless Chromium: a page on an allowed origin may call the API, a page
on another origin is refused by the browser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from server.config import Settings
from server.http.app import create_app
from tests.browser import Browser
from tests.helpers import ALICE, base_env

# What a frontend does: POST a query with its bearer token, read the JSON.
FETCH = """
fetch(%(url)s, {
  method: "POST",
  headers: {"Content-Type": "application/json", "Authorization": %(auth)s},
  body: JSON.stringify({query: "{ viewer { id } }"}),
}).then((response) => response.json()).then(
  (body) => ({read: body}),
  (error) => ({refused: error.name}),
)
"""


async def _frontend(aiohttp_server: Any) -> str:
    """A page on an origin of its own (its own loopback port); its origin."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>frontend</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def origins(aiohttp_server: Any, sqlite_url: str) -> dict[str, str]:
    """The API allowing one frontend origin; another frontend origin it does not know."""
    allowed = await _frontend(aiohttp_server)
    other = await _frontend(aiohttp_server)
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url, CORS_ALLOWED_ORIGINS=allowed))
    api = await aiohttp_server(create_app(settings), host="127.0.0.1")
    return {"allowed": allowed, "other": other, "api": str(api.make_url("/graphql"))}


def _fetch(url: str) -> str:
    return FETCH % {"url": json.dumps(url), "auth": json.dumps(ALICE)}


async def test_a_page_on_an_allowed_origin_reads_the_answer(
    browser: Browser, origins: dict[str, str]
) -> None:
    """Make sure the frontend's origin gets through the preflight and reads the data."""
    page = await browser.new_page()
    await page.goto(origins["allowed"] + "/")

    outcome = await page.evaluate(_fetch(origins["api"]))

    assert outcome == {"read": {"data": {"viewer": {"id": "alice"}}}}
    methods = [
        event["request"]["method"] for event in page.events_named("Network.requestWillBeSent")
    ]
    assert "POST" in methods


async def test_a_page_on_another_origin_is_refused_by_the_browser(
    browser: Browser, origins: dict[str, str]
) -> None:
    """Make sure a page on an origin the API does not name cannot call it: the browser
    stops the request and says it was for CORS."""
    page = await browser.new_page()
    await page.goto(origins["other"] + "/")

    outcome = await page.evaluate(_fetch(origins["api"]))

    assert outcome == {"refused": "TypeError"}
    failure = await page.wait_for_event("Network.loadingFailed")
    assert failure.get("corsErrorStatus"), failure
