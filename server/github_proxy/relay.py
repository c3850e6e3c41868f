"""The proxy's handlers: a capability in, GitHub's answer out, the user's token in between.

Every request goes the same way (`GitHubProxy._answer`): its target is
checked before anything is read, so a malformed request costs nothing; then
the capability is redeemed, rate-limited and matched against the target;
only then is the user's token taken, with a window on it (`_token_for`), the
request streamed to the configured host and the answer streamed back, never
buffered whole. A 401 from GitHub is reported as a rejected token once
(`_rejected`) before the worker gets it.
Writes are audited once GitHub has answered, or failed to. Every refusal is a
4xx saying why; a 5xx only ever means GitHub, or the token, is unavailable.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from aiohttp import web

from server.config import GitHubProxyConfig
from server.domain.checkout import CheckedOutToken
from server.domain.enums import ErrorCode
from server.domain.errors import Refusal
from server.domain.github_access import GitHubAccess
from server.github_proxy import capabilities, forwarding, scope
from server.github_proxy.capabilities import Capability
from server.github_proxy.rate_limit import RateLimiter
from server.github_proxy.scope import Refused, Route, Target
from server.github_proxy.tokens import ProxyTokens
from server.github_proxy.upstream import (
    RequestBody,
    Upstream,
    answer_chunks,
    new_session,
    rewritable,
    upstreams,
)
from server.http.appkeys import (
    CLOCK,
    GITHUB,
    METRICS,
    REFRESH_LOCKS,
    REJECTION_REPORTS,
    REQUEST_ID,
    SETTINGS,
)
from server.http.request_context import REQUEST_ID_HEADER

logger = logging.getLogger("ghvault.github_proxy")

USER_AGENT = "ghvault-proxy"
# A Host header that can stand in a URL as it is; anything else gets relative URLs.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

UNAUTHENTICATED = Refused(
    401,
    "Send a live ghvault capability: Authorization: Bearer ghvcap_... for the API, "
    "or as the password of the git remote.",
    "unauthenticated",
)
# What a checkout's refusal means to a proxied request.
_TOKEN_REFUSED: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.NOT_CONNECTED: (401, "unauthenticated"),
    ErrorCode.TOKEN_REVOKED: (401, "unauthenticated"),
    ErrorCode.REFRESH_FAILED: (401, "unauthenticated"),
}
_TOKEN_UNAVAILABLE = (503, "token_unavailable")


def capability_in(authorization: str | None) -> str | None:
    """The capability a worker sent: `Bearer` (or `token`) <capability>, or in Basic
    credentials as the password (git) or as the user name with no password."""
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    if scheme.lower() in ("bearer", "token"):
        return value or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # not base64, or not UTF-8
        return None
    user, colon, password = decoded.partition(":")
    if not colon:
        return None
    return password or user or None


@dataclass
class _Relayed:
    response: web.StreamResponse
    outcome: str
    sent: int = 0
    received: int = 0


class GitHubProxy:
    """The handlers of /github/api and /github/git, and what they share: the session to
    GitHub (upstream.py), the rate limits and the tokens in use."""

    def __init__(self, config: GitHubProxyConfig, *, api_base_url: str) -> None:
        self.config = config
        self.limits = RateLimiter(config.requests_per_minute)
        self._tokens = ProxyTokens()
        self._session: aiohttp.ClientSession | None = None
        self._upstreams = upstreams(config, api_base_url=api_base_url)

    async def session_context(self, app: web.Application) -> AsyncIterator[None]:
        """A cleanup context: the session lives as long as the app."""
        async with new_session(
            config=self.config, connect_timeout=app[SETTINGS].github_timeout_seconds
        ) as session:
            self._session = session
            yield
            self._session = None

    async def api(self, request: web.Request) -> web.StreamResponse:
        """`ANY /github/api/{path}`: GitHub's REST API as the user."""
        url = request.rel_url
        target = scope.api_target(request.method, url.raw_path, url.raw_query_string)
        return await self._relay(request, self._upstreams[Route.API], target)

    async def git(self, request: web.Request) -> web.StreamResponse:
        """`/github/git/{owner}/{name}.git/...`: git's smart HTTP as the user."""
        url = request.rel_url
        target = scope.git_target(request.method, url.raw_path, url.raw_query_string)
        return await self._relay(request, self._upstreams[Route.GIT], target)

    async def _relay(
        self, request: web.Request, upstream: Upstream, target: Target | Refused
    ) -> web.StreamResponse:
        started = time.perf_counter()
        relayed = await self._answer(request, upstream, target)
        request.app[METRICS].proxy_done(
            upstream.route.value,
            request.method,
            relayed.outcome,
            time.perf_counter() - started,
            relayed.sent,
            relayed.received,
        )
        return relayed.response

    async def _answer(
        self, request: web.Request, upstream: Upstream, target: Target | Refused
    ) -> _Relayed:
        if isinstance(target, Refused):
            return self._refuse(upstream, target)
        now = request.app[CLOCK]()
        secret = capability_in(request.headers.get("Authorization"))
        capability = await capabilities.redeem(secret, now=now) if secret else None
        if capability is None:
            return self._refuse(upstream, UNAUTHENTICATED)
        wait = self.limits.take(capability.id, now)
        if wait is not None:
            message = f"Too many requests with this capability; try again in {math.ceil(wait)} s."
            relayed = self._refuse(upstream, Refused(429, message, "rate_limited"))
            relayed.response.headers["Retry-After"] = str(math.ceil(wait))
            return relayed
        refused = scope.refusal(capability, target)
        if refused is not None:
            return self._refuse(upstream, refused)
        if request.content_length is not None and request.content_length > upstream.max_body_bytes:
            return self._refuse(upstream, self._too_large(upstream))
        token = await self._token_for(request.app, capability, now)
        if isinstance(token, Refusal):
            status, outcome = _TOKEN_REFUSED.get(token.code, _TOKEN_UNAVAILABLE)
            return self._refuse(upstream, Refused(status, token.message, outcome))
        if token.github_user_id != capability.github_user_id:
            # The user connected another GitHub account since: not the one it was issued for.
            return self._refuse(upstream, UNAUTHENTICATED)
        return await self._forward(request, upstream, target, capability, token, now)

    async def _token_for(
        self, app: web.Application, capability: Capability, now: datetime
    ) -> CheckedOutToken | Refusal:
        """The user's current access token for one proxied request (see tokens.py)."""
        settings = app[SETTINGS]
        return await self._tokens.token_for(
            capability,
            now=now,
            keyring=settings.keyring,
            github=self._github(app, capability),
            locks=app[REFRESH_LOCKS],
        )

    async def _rejected(
        self, request: web.Request, capability: Capability, token: CheckedOutToken, now: datetime
    ) -> None:
        """GitHub answered 401 to the token: report it once (refreshed, or revoked, when
        GitHub confirms it is dead), then the worker gets GitHub's answer; its next
        request takes whatever token that left."""
        app = request.app
        report = await self._tokens.rejected(
            capability,
            token,
            now=now,
            keyring=app[SETTINGS].keyring,
            github=self._github(app, capability),
            locks=app[REFRESH_LOCKS],
            limit=app[REJECTION_REPORTS],
        )
        what = report.code.value if isinstance(report, Refusal) else report.outcome.value
        logger.info("request %s: GitHub refused the token: %s", request[REQUEST_ID], what)

    def _github(self, app: web.Application, capability: Capability) -> GitHubAccess:
        return GitHubAccess(
            client=app[GITHUB], app=app[SETTINGS].github_apps.get(capability.app_type)
        )

    async def _forward(
        self,
        request: web.Request,
        upstream: Upstream,
        target: Target,
        capability: Capability,
        token: CheckedOutToken,
        now: datetime,
    ) -> _Relayed:
        assert self._session is not None, "the proxy's session starts with the app"
        headers = forwarding.to_github(request.headers)
        headers["Authorization"] = upstream.authorization(token.access_token)
        headers.setdefault("User-Agent", USER_AGENT)
        if upstream.route is Route.API:
            # Uncompressed, so the URL fields of JSON answers can be rewritten on the way.
            headers["Accept-Encoding"] = "identity"
        body = RequestBody(request.content, upstream.max_body_bytes)
        try:
            answer = await self._session.request(
                request.method,
                upstream.url(target),
                headers=headers,
                data=body.chunks() if request.body_exists else None,
                # A redirect goes back to the worker (rewritten when it points below
                # the base), never followed here with the token.
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            if target.audited:
                await self._audit(capability, target, None, now)
            if body.too_large:
                return self._refuse(upstream, self._too_large(upstream))
            return self._refuse(upstream, self._unreachable(request, upstream, exc))
        try:
            if target.audited:
                await self._audit(capability, target, answer.status, now)
            if answer.status == 401:
                await self._rejected(request, capability, token, now)
            relayed = await self._stream_back(request, upstream, target, answer)
        finally:
            # Back to the pool when read to its end, closed otherwise.
            answer.release()
        relayed.sent = body.sent
        return relayed

    def _unreachable(self, request: web.Request, upstream: Upstream, exc: BaseException) -> Refused:
        logger.warning(
            "request %s: GitHub (%s) did not answer: %s",
            request[REQUEST_ID],
            upstream.route.value,
            type(exc).__name__,
        )
        if isinstance(exc, TimeoutError):
            return Refused(504, "GitHub did not answer in time.", "github_unreachable")
        return Refused(502, "GitHub is unreachable.", "github_unreachable")

    async def _stream_back(
        self,
        request: web.Request,
        upstream: Upstream,
        target: Target,
        answer: aiohttp.ClientResponse,
    ) -> _Relayed:
        back = forwarding.BackToProxy(
            upstream=upstream.base,
            proxy=self._public(request, upstream),
            repository=target.repository,
        )
        headers = forwarding.to_worker(answer.headers, back)
        fields = forwarding.JsonUrlFields(back) if rewritable(upstream, answer) else None
        if fields is not None:
            headers.popall("Content-Length", None)  # the rewritten body has its own length
        response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=headers)
        # Sent before the request id middleware sees the response.
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
        await response.prepare(request)
        received = 0
        chunks = answer_chunks(answer, fields)
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning(
                    "request %s: GitHub broke off its answer: %s",
                    request[REQUEST_ID],
                    type(exc).__name__,
                )
                # Closed without an end, so the worker cannot take what came for the whole.
                if request.transport is not None:
                    request.transport.abort()
                return _Relayed(response, "github_unreachable", received=received)
            try:
                await response.write(chunk)
            except ConnectionResetError:
                return _Relayed(response, "aborted", received=received)
            received += len(chunk)
        await response.write_eof()
        return _Relayed(response, _outcome(answer.status), received=received)

    async def _audit(
        self, capability: Capability, target: Target, status: int | None, now: datetime
    ) -> None:
        await capabilities.record_write(
            capability,
            route=target.route.value,
            method=target.method,
            repository=target.repository,
            path=target.path,
            status=status,
            now=now,
        )

    def _public(self, request: web.Request, upstream: Upstream) -> str:
        """Where the worker reaches this route of the proxy, for GitHub's links and redirects."""
        if self.config.public_url is not None:
            return self.config.public_url + upstream.prefix
        if _HOST.fullmatch(request.host):
            return f"{request.scheme}://{request.host}{upstream.prefix}"
        return upstream.prefix

    def _too_large(self, upstream: Upstream) -> Refused:
        message = f"The body is larger than this proxy takes ({upstream.max_body_bytes} bytes)."
        return Refused(413, message, "too_large")

    def _refuse(self, upstream: Upstream, refused: Refused) -> _Relayed:
        """ghvault's own answer: JSON as GitHub's errors are for the API, text for git."""
        headers = {"WWW-Authenticate": upstream.challenge} if refused.status == 401 else {}
        if upstream.route is Route.API:
            response: web.StreamResponse = web.json_response(
                {"message": refused.message}, status=refused.status, headers=headers
            )
        else:
            response = web.Response(
                text=refused.message + "\n", status=refused.status, headers=headers
            )
        return _Relayed(response, refused.outcome)


def _outcome(status: int) -> str:
    if status >= 500:
        return "github_5xx"
    if status >= 400:
        return "github_4xx"
    return "ok"


def add_github_proxy(app: web.Application, proxy: GitHubProxy) -> None:
    """Route /github/api/... and /github/git/... to `proxy`, its session started with the app."""
    app.cleanup_ctx.append(proxy.session_context)
    app.router.add_route("*", scope.API_PREFIX, proxy.api)
    app.router.add_route("*", scope.API_PREFIX + "/{path:.*}", proxy.api)
    app.router.add_route("*", scope.GIT_PREFIX + "/{path:.*}", proxy.git)
