"""Bodies cross the proxy as they come, both ways, never gathered whole first.

"GitHub" here is a server of the test's own that hands the conversation
over in turns: each side sends its second chunk only once the other side
has received the first. A proxy that waited for a whole body before passing
it on would never get there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fake_github import FakeGitHub
from tests.helpers import GraphQLClient, MovableClock, issue_capability, store_live_token

FIRST, SECOND = b"a" * 70_000, b"b" * 70_000


class TurnTaking:
    """The test's GitHub: receives the worker's body and answers, one chunk at a time."""

    def __init__(self) -> None:
        self.first_received = asyncio.Event()
        self.first_answered = asyncio.Event()
        self.received = b""
        self.authorization = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.authorization = request.headers.get("Authorization", "")
        while len(self.received) < len(FIRST + SECOND):
            chunk = await request.content.readany()
            if not chunk:
                break
            self.received += chunk
            if len(self.received) >= len(FIRST):
                self.first_received.set()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        await response.write(FIRST)
        await self.first_answered.wait()
        await response.write(SECOND)
        await response.write_eof()
        return response


@pytest.fixture
async def turn_taking(aiohttp_server: Any) -> AsyncIterator[tuple[TurnTaking, TestServer]]:
    github = TurnTaking()
    app = web.Application()
    app.router.add_post("/repos/octocat/hello-world/git/blobs", github.handle)
    server = await aiohttp_server(app)
    yield github, server
    github.first_answered.set()


@pytest.fixture
def proxy_env(turn_taking: tuple[TurnTaking, TestServer]) -> dict[str, str]:
    _, server = turn_taking
    return {"GITHUB_API_BASE_URL": str(server.make_url("")).rstrip("/")}


async def test_bodies_stream_both_ways_without_waiting_for_their_end(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    turn_taking: tuple[TurnTaking, TestServer],
) -> None:
    github, _ = turn_taking
    access = await store_live_token(gql, fake_github, clock())
    capability = await issue_capability(gql, access="WRITE")

    async def body() -> AsyncIterator[bytes]:
        yield FIRST
        await github.first_received.wait()
        yield SECOND

    response = await gql.http.post(
        "/github/api/repos/octocat/hello-world/git/blobs",
        data=body(),
        headers={"Authorization": f"Bearer {capability}"},
    )
    first = await response.content.readexactly(len(FIRST))
    github.first_answered.set()
    second = await response.content.read()

    assert response.status == 200
    assert github.received == FIRST + SECOND
    assert (first, second) == (FIRST, SECOND)
    assert github.authorization == f"Bearer {access}"
