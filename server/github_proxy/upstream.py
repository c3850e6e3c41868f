"""Where each route of the proxy forwards, how it presents the token there, and the bodies.

One session serves both routes: no cookie jar (GitHub's cookies are not
kept for the next worker), bodies left as GitHub encoded them, no total
timeout (a push of hundreds of MB takes what it takes), only a bound on
silence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from server.config import GitHubProxyConfig
from server.github_proxy import forwarding, scope
from server.github_proxy.scope import Route, Target

CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Upstream:
    """Where one route forwards to, and how it presents the token there."""

    route: Route
    base: str
    prefix: str
    authorization: Callable[[str], str]
    max_body_bytes: int
    challenge: str

    def url(self, target: Target) -> URL:
        # Encoded as the worker sent it (scope.py checked every segment): GitHub decodes it.
        query = f"?{target.query}" if target.query else ""
        return URL(self.base + target.path + query, encoded=True)


def git_basic(token: str) -> str:
    return aiohttp.encode_basic_auth("x-access-token", token)


def upstreams(config: GitHubProxyConfig, *, api_base_url: str) -> dict[Route, Upstream]:
    return {
        Route.API: Upstream(
            route=Route.API,
            base=api_base_url,
            prefix=scope.API_PREFIX,
            authorization=lambda token: f"Bearer {token}",
            max_body_bytes=config.max_api_body_bytes,
            challenge='Bearer realm="ghvault"',
        ),
        Route.GIT: Upstream(
            route=Route.GIT,
            base=config.git_base_url,
            prefix=scope.GIT_PREFIX,
            authorization=git_basic,
            max_body_bytes=config.max_git_body_bytes,
            challenge='Basic realm="ghvault"',
        ),
    }


def new_session(*, config: GitHubProxyConfig, connect_timeout: float) -> aiohttp.ClientSession:
    """The session to GitHub; call with the event loop running."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=config.idle_timeout_seconds
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        # Only what the worker sent: an Accept-Encoding added here would come back
        # compressed to a worker that never asked for it.
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
        read_bufsize=CHUNK_BYTES,
    )


class BodyTooLarge(Exception):
    pass


class RequestBody:
    """The worker's body on its way to GitHub: counted, and cut off past the limit."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.sent = 0
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._content.iter_chunked(CHUNK_BYTES):
            self.sent += len(chunk)
            if self.sent > self._limit:
                self.too_large = True
                raise BodyTooLarge
            yield chunk


async def answer_chunks(
    answer: aiohttp.ClientResponse, fields: forwarding.JsonUrlFields | None
) -> AsyncIterator[bytes]:
    """GitHub's body as it arrives, its URL fields rewritten when `fields` is given."""
    while chunk := await answer.content.readany():
        if fields is not None:
            chunk = fields.feed(chunk)
        if chunk:
            yield chunk
    if fields is not None and (rest := fields.end()):
        yield rest


def rewritable(upstream: Upstream, answer: aiohttp.ClientResponse) -> bool:
    """A REST answer in JSON, as GitHub sent it (the proxy asks for it uncompressed)."""
    encoding = answer.headers.get("Content-Encoding", "identity").lower()
    return (
        upstream.route is Route.API
        and answer.content_type.endswith("json")
        and (encoding == "identity")
    )
