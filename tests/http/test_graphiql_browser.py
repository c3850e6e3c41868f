"""GraphiQL in a real headless Chromium: works offline, talks only to its own server."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from server.config import Settings
from server.http.app import create_app
from tests.browser import Browser
from tests.helpers import ADMIN, base_env

QUERY_EDITOR = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
HEADERS_EDITOR = (
    "[...document.querySelectorAll('.graphiql-editor-tool .graphiql-editor')]"
    ".find(e => !e.classList.contains('hidden')).querySelector('.CodeMirror').CodeMirror"
)
RESULT_EDITOR = "document.querySelector('.result-window .CodeMirror').CodeMirror"


@pytest.fixture
async def graphiql_url(aiohttp_server: Any, sqlite_url: str) -> str:
    """GraphiQL of an app on a loopback port, on a migrated SQLite database."""
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url))
    server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    return str(server.make_url("/graphql"))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def test_graphiql_runs_a_query_offline_with_a_bearer_header(
    browser: Browser, graphiql_url: str
) -> None:
    """Make sure an admin can paste a header, run `{ viewer { id role } }` and read the
    answer, with every request going to the server's own origin and no CSP violation."""
    page = await browser.new_page()
    await page.goto(graphiql_url)
    await page.wait_for(f"{HEADERS_EDITOR}.getValue()", "the headers editor")
    template = json.loads(await page.evaluate(f"{HEADERS_EDITOR}.getValue()"))
    assert template == {"Authorization": "Bearer <token>"}

    await page.evaluate(
        f"{HEADERS_EDITOR}.setValue({json.dumps(json.dumps({'Authorization': ADMIN}))})"
    )
    await page.evaluate(f"{QUERY_EDITOR}.setValue('{{ viewer {{ id role }} }}')")
    await page.evaluate("document.querySelector('.graphiql-execute-button').click()")
    shown = await page.wait_for(
        f"{RESULT_EDITOR}.getValue().includes('viewer') && {RESULT_EDITOR}.getValue()",
        "the query result",
    )

    assert json.loads(shown) == {"data": {"viewer": {"id": "root", "role": "ADMIN"}}}
    origin = _origin(graphiql_url)
    fetched = [url for url in page.requested_urls() if not url.startswith("data:")]
    assert fetched, "the network log recorded no request"
    assert [url for url in fetched if _origin(url) != origin] == []
    assert await page.evaluate("window.__violations") == []
    assert await page.evaluate("window.__errors") == []


async def test_graphiql_keeps_no_token_in_browser_storage(
    browser: Browser, graphiql_url: str
) -> None:
    """Make sure the header an admin pasted is not written to localStorage, so it is gone
    with the tab, and a reload shows the template again."""
    page = await browser.new_page()
    await page.goto(graphiql_url)
    await page.wait_for(f"{HEADERS_EDITOR}.getValue()", "the headers editor")
    token = ADMIN.removeprefix("Bearer ")
    await page.evaluate(
        f"{HEADERS_EDITOR}.setValue({json.dumps(json.dumps({'Authorization': ADMIN}))})"
    )
    await page.evaluate("document.querySelector('.graphiql-execute-button').click()")
    await page.wait_for(f"{RESULT_EDITOR}.getValue().includes('viewer')", "the query result")

    stored = dict(await page.evaluate("Object.entries(localStorage)"))
    assert "viewer" in stored["graphiql:queries"], "the query history was not kept"
    assert [key for key, value in stored.items() if token in value] == []
    await page.goto(graphiql_url)
    await page.wait_for(f"{HEADERS_EDITOR}.getValue()", "the headers editor")
    assert "<token>" in await page.evaluate(f"{HEADERS_EDITOR}.getValue()")


async def test_the_browser_enforces_the_pages_policy(browser: Browser, graphiql_url: str) -> None:
    """Make sure the CSP is in force in the browser: a script from another host, or an
    inline one, added to the page is refused, and the refusal is reported."""
    page = await browser.new_page()
    await page.goto(graphiql_url)

    outcome = await page.evaluate(
        """new Promise((resolve) => {
          const remote = document.createElement("script");
          remote.src = "https://cdn.example.com/graphiql.min.js";
          remote.onload = () => resolve("loaded");
          remote.onerror = () => resolve("refused");
          document.head.appendChild(remote);
        })"""
    )
    await page.evaluate(
        """(() => {
          const inline = document.createElement("script");
          inline.textContent = "window.__inlineRan = true";
          document.head.appendChild(inline);
        })()"""
    )

    assert outcome == "refused"
    assert await page.evaluate("window.__inlineRan === true") is False
    violations = await page.wait_for(
        "window.__violations.length >= 2 && window.__violations", "both refusals reported"
    )
    assert "script-src-elem https://cdn.example.com/graphiql.min.js" in violations
    assert "script-src-elem inline" in violations


HINT = "document.querySelector('.ghvault-schema-hint').innerText"
DOCS = "(document.querySelector('.graphiql-doc-explorer') || {innerText: ''}).innerText"
SHOW_DOCS = "document.querySelector('[aria-label=\"Show Documentation Explorer\"]').click()"


def _graphql_posts(page: Any) -> list[dict[str, Any]]:
    return [
        event
        for event in page.events_named("Network.requestWillBeSent")
        if event["request"]["method"] == "POST"
    ]


async def test_graphiql_loads_the_schema_once_a_token_is_pasted(
    browser: Browser, graphiql_url: str
) -> None:
    """Make sure GraphiQL works in the order a person uses it: the page opens without an
    error (nothing is sent before there is a token, the Docs pane shows a hint), pasting a
    token loads the schema into the Docs pane, and a refused token says so."""
    page = await browser.new_page()
    await page.goto(graphiql_url)
    await page.wait_for(f"{HEADERS_EDITOR}.getValue()", "the headers editor")
    await page.evaluate(SHOW_DOCS)
    docs_before = await page.wait_for(DOCS, "the docs pane")
    hint_before = await page.evaluate(HINT)
    sent_before = _graphql_posts(page)

    await page.evaluate(
        f"{HEADERS_EDITOR}.setValue({json.dumps(json.dumps({'Authorization': ADMIN}))})"
    )
    docs = await page.wait_for(f"{DOCS}.includes('Query') && {DOCS}", "the schema in the docs")
    hint_loaded = await page.wait_for(f"{HINT} === '' ? 'empty' : ''", "the hint to go")
    await page.evaluate(
        f"{HEADERS_EDITOR}.setValue({json.dumps(json.dumps({'Authorization': 'Bearer x.y.z'}))})"
    )
    hint_refused = await page.wait_for(f"{HINT}.includes('refused') && {HINT}", "a refusal")

    assert sent_before == []
    assert "Error fetching schema" not in docs_before
    assert "bearer token in the Headers pane" in hint_before
    assert "Error fetching schema" not in docs
    assert hint_loaded == "empty"
    assert "paste a valid one" in hint_refused
    assert await page.evaluate("window.__errors") == []
    assert await page.evaluate("window.__violations") == []
