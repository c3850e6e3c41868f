"""A fake GitHub, served over real HTTP on loopback, for the test suite.

It implements only what ghvault uses, but fails the way GitHub fails: OAuth errors come back
as HTTP 200 with an ``error`` field, authorization codes and refresh tokens work once, a
refresh invalidates the previous access and refresh tokens, and revoking a grant kills all of
its tokens. It answers the check-token endpoint ghvault asks about a rejected token, and the
REST endpoints a commit worker would call (tests/fake_github_repos.py), which answer 401 for
a dead access token; it notes when each access token died, so a test can tell whether one
died inside the window ghvault promised for it.

Because it is plain HTTP, server processes started by a test can point at ``fake.base_url``
as well. ``start_fake_github`` runs it on the test's own event loop (the test must keep
awaiting while others talk to it); ``fake_github_in_thread`` runs it on a private loop in a
background thread, for synchronous tests and fixtures wider than one test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import string
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlencode

from aiohttp import hdrs, web

from tests.fake_github_repos import FakeRepositories

_TOKEN_ALPHABET = string.ascii_letters + string.digits
_TROUBLESHOOTING = (
    "https://docs.github.com/apps/managing-oauth-apps/"
    "troubleshooting-oauth-app-access-token-request-errors/"
)
_REST_DOCS = "https://docs.github.com/rest"

ACCESS_TOKEN_EXPIRES_IN = 28800
REFRESH_TOKEN_EXPIRES_IN = 15811200


class AppCredentials(Protocol):
    """Anything with a client id and secret, e.g. ``server.github.GitHubApp``."""

    @property
    def client_id(self) -> str: ...

    @property
    def client_secret(self) -> str: ...


@dataclass(frozen=True)
class FakeApp:
    app_type: str
    client_id: str
    client_secret: str = field(repr=False)


STANDARD_APP = FakeApp("standard", "Iv1.fakestandard0001", "fake-standard-client-secret-0001")
LITE_APP = FakeApp("lite", "Iv1.fakelite00000001", "fake-lite-client-secret-00000001")
DEFAULT_APPS: tuple[FakeApp, ...] = (STANDARD_APP, LITE_APP)


@dataclass
class _User:
    id: int
    login: str
    email: str | None


@dataclass(frozen=True)
class _Code:
    client_id: str
    user_id: int
    code_challenge: str | None
    redirect_uri: str | None


@dataclass(frozen=True)
class _Pair:
    """An access token and the refresh token issued with it, which die together."""

    client_id: str
    user_id: int
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)


class FakeGitHub:
    """State and HTTP handlers of the fake; the switches below are meant to be set by tests.

    ``fail_with_status``: when set, every endpoint answers that status with an HTML body.
    ``fail_endpoints``: the same for the named endpoints only ({"revoke_grant": 503}).
    ``hang_seconds``: when positive, every endpoint waits that long before answering.
    ``access_token_expires_in``, ``refresh_token_expires_in``: the lifetimes new grants
    announce, in seconds.
    ``oversized_answer_bytes``: when positive, every endpoint answers 200 with a JSON
    body of that many bytes.
    ``after_revoke``: when set, awaited after a revoke_grant request did its work and
    before it is answered: what happens while GitHub is slow to answer a revocation.
    ``calls``: requests received per endpoint ("exchange", "refresh", "user",
    "revoke_grant", "check_token"), counted on arrival, so failed and hung requests
    count too.
    ``refused``: refusals of a spent or unknown refresh token ("bad_refresh_token").
    ``repos``: the REST endpoints of repositories and issues (tests/fake_github_repos.py),
    which answer 401 for a dead access token.
    """

    def __init__(self, apps: Iterable[AppCredentials] = DEFAULT_APPS) -> None:
        # Helpers may be called from another thread than the one serving HTTP.
        self._lock = threading.Lock()
        self._apps: dict[str, str] = {}
        self._users: dict[int, _User] = {}
        self._codes: dict[str, _Code] = {}
        self._by_access: dict[str, _Pair] = {}
        self._by_refresh: dict[str, _Pair] = {}
        self._killed_at: dict[str, datetime] = {}
        self.fail_with_status: int | None = None
        self.fail_endpoints: dict[str, int] = {}
        self.hang_seconds: float = 0.0
        self.access_token_expires_in = ACCESS_TOKEN_EXPIRES_IN
        self.refresh_token_expires_in = REFRESH_TOKEN_EXPIRES_IN
        self.oversized_answer_bytes = 0
        self.after_revoke: Callable[[], Awaitable[None]] | None = None
        self.calls: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._base_url: str | None = None
        self.repos = FakeRepositories(self.login_of)
        for app in apps:
            self.register_app(app)

    # Test helpers

    @property
    def base_url(self) -> str:
        """Serves both the OAuth endpoints and the REST API, like a GHES host would."""
        if self._base_url is None:
            raise RuntimeError("the fake GitHub is not running")
        return self._base_url

    def register_app(self, app: AppCredentials) -> None:
        with self._lock:
            self._apps[app.client_id] = app.client_secret

    def issue_code(
        self,
        *,
        client_id: str,
        github_user_id: int,
        login: str,
        code_challenge: str | None = None,
        redirect_uri: str | None = None,
        email: str | None = None,
    ) -> str:
        """Return the code GitHub would put on the callback after the user approved."""
        code = secrets.token_hex(10)
        with self._lock:
            self._require_app(client_id)
            self._remember_user(github_user_id, login, email)
            self._codes[code] = _Code(client_id, github_user_id, code_challenge, redirect_uri)
        return code

    def seed_token(
        self, client_id: str, github_user_id: int, login: str, email: str | None = None
    ) -> tuple[str, str]:
        """Create a live grant without the web flow; returns (access_token, refresh_token)."""
        with self._lock:
            self._require_app(client_id)
            self._remember_user(github_user_id, login, email)
            pair = self._issue_pair(client_id, github_user_id)
        return pair.access_token, pair.refresh_token

    def is_access_token_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._by_access

    def login_of(self, access_token: str) -> str | None:
        """The login whose live access token this is, or None."""
        with self._lock:
            pair = self._by_access.get(access_token)
            user = self._users.get(pair.user_id) if pair else None
        return user.login if user else None

    def is_refresh_token_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._by_refresh

    def killed_at(self, access_token: str) -> datetime | None:
        """When a refresh, a revocation or `expire_access_token` killed the token, if one did."""
        with self._lock:
            return self._killed_at.get(access_token)

    def expire_access_token(self, access_token: str) -> None:
        """Stop accepting the access token, as GitHub does once it expires; the refresh
        token issued with it keeps working."""
        with self._lock:
            if self._by_access.pop(access_token, None) is not None:
                self._killed_at[access_token] = datetime.now(UTC)

    def reset(self) -> None:
        """Forget users, codes, tokens and counters and clear the switches; keep the apps."""
        with self._lock:
            self._users.clear()
            self._codes.clear()
            self._by_access.clear()
            self._by_refresh.clear()
            self._killed_at.clear()
            self.calls.clear()
            self.refused.clear()
        self.reset_switches()

    def reset_switches(self) -> None:
        """Answer normally again."""
        self.fail_with_status = None
        self.fail_endpoints = {}
        self.hang_seconds = 0.0
        self.access_token_expires_in = ACCESS_TOKEN_EXPIRES_IN
        self.refresh_token_expires_in = REFRESH_TOKEN_EXPIRES_IN
        self.oversized_answer_bytes = 0
        self.after_revoke = None

    # Serving

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/login/oauth/access_token", self._token_endpoint)
        app.router.add_get("/user", self._user_endpoint)
        app.router.add_delete("/applications/{client_id}/grant", self._revoke_grant_endpoint)
        app.router.add_post("/applications/{client_id}/token", self._check_token_endpoint)
        self.repos.register(app)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._closing = asyncio.Event()
        # Cancelling handlers whose client went away keeps hung requests from delaying close.
        runner = web.AppRunner(
            self.make_app(), shutdown_timeout=1.0, handler_cancellation=True, access_log=None
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._base_url = None

    # Internals; callers hold self._lock

    def _require_app(self, client_id: str) -> None:
        if client_id not in self._apps:
            raise KeyError(f"no fake app registered with client_id {client_id!r}")

    def _remember_user(self, user_id: int, login: str, email: str | None) -> None:
        self._users[user_id] = _User(user_id, login, email)

    def _issue_pair(self, client_id: str, user_id: int) -> _Pair:
        pair = _Pair(client_id, user_id, _token("ghu_", 36), _token("ghr_", 76))
        self._by_access[pair.access_token] = pair
        self._by_refresh[pair.refresh_token] = pair
        return pair

    def _drop_pair(self, pair: _Pair) -> None:
        if self._by_access.pop(pair.access_token, None) is not None:
            self._killed_at[pair.access_token] = datetime.now(UTC)
        self._by_refresh.pop(pair.refresh_token, None)

    def _client_ok(self, client_id: str, client_secret: str) -> bool:
        expected = self._apps.get(client_id)
        return expected is not None and hmac.compare_digest(
            expected.encode(), client_secret.encode()
        )

    # Handlers

    async def _arrive(self, endpoint: str) -> web.Response | None:
        """Count the call and apply the switches; a response returned here is final."""
        with self._lock:
            self.calls[endpoint] += 1
        if self.hang_seconds > 0:
            assert self._closing is not None
            try:
                async with asyncio.timeout(self.hang_seconds):
                    await self._closing.wait()
            except TimeoutError:
                pass
            else:
                return web.Response(status=503, text="shutting down")
        if self.oversized_answer_bytes > 0:
            padding = " " * (self.oversized_answer_bytes - 2)
            return web.Response(text="{" + padding + "}", content_type="application/json")
        status = self.fail_endpoints.get(endpoint, self.fail_with_status)
        if status is not None:
            return web.Response(
                status=status,
                text=f"<html><body><h1>{status}</h1></body></html>",
                content_type="text/html",
            )
        return None

    async def _token_endpoint(self, request: web.Request) -> web.Response:
        # GitHub reads the parameters from the query string as well as the form body.
        params = {key: str(value) for key, value in request.query.items()}
        params.update({key: str(value) for key, value in (await request.post()).items()})
        grant_type = params.get("grant_type", "authorization_code")
        if grant_type == "refresh_token":
            endpoint = "refresh"
        elif grant_type == "authorization_code":
            endpoint = "exchange"
        else:
            endpoint = "unsupported_grant"
        if (early := await self._arrive(endpoint)) is not None:
            return early
        with self._lock:
            if endpoint == "unsupported_grant":
                payload = _oauth_error("unsupported_grant_type", "Unsupported grant type.")
            elif not self._client_ok(params.get("client_id", ""), params.get("client_secret", "")):
                payload = _oauth_error(
                    "incorrect_client_credentials",
                    "The client_id and/or client_secret passed are incorrect.",
                )
            elif endpoint == "refresh":
                payload = self._refresh(params)
            else:
                payload = self._exchange(params)
        return _oauth_response(request, payload)

    def _exchange(self, params: dict[str, str]) -> dict[str, object]:
        bad_code = _oauth_error("bad_verification_code", "The code passed is incorrect or expired.")
        issued = self._codes.get(params.get("code", ""))
        if issued is None or issued.client_id != params["client_id"]:
            return bad_code
        # Presenting a code spends it, whether or not the rest of the request is right.
        del self._codes[params["code"]]
        redirect_uri = params.get("redirect_uri")
        if redirect_uri and issued.redirect_uri and redirect_uri != issued.redirect_uri:
            return _oauth_error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            )
        if issued.code_challenge is not None:
            verifier = params.get("code_verifier", "")
            if not 43 <= len(verifier) <= 128 or not hmac.compare_digest(
                _s256(verifier), issued.code_challenge
            ):
                return bad_code
        return self._grant_payload(self._issue_pair(issued.client_id, issued.user_id))

    def _grant_payload(self, pair: _Pair) -> dict[str, object]:
        return {
            "access_token": pair.access_token,
            "expires_in": self.access_token_expires_in,
            "refresh_token": pair.refresh_token,
            "refresh_token_expires_in": self.refresh_token_expires_in,
            "token_type": "bearer",
            "scope": "",
        }

    def _refresh(self, params: dict[str, str]) -> dict[str, object]:
        old = self._by_refresh.get(params.get("refresh_token", ""))
        if old is None or old.client_id != params["client_id"]:
            self.refused["bad_refresh_token"] += 1
            return _oauth_error(
                "bad_refresh_token", "The refresh token passed is incorrect or expired."
            )
        self._drop_pair(old)
        return self._grant_payload(self._issue_pair(old.client_id, old.user_id))

    async def _user_endpoint(self, request: web.Request) -> web.Response:
        if (early := await self._arrive("user")) is not None:
            return early
        token = _bearer_token(request)
        if isinstance(token, web.Response):
            return token
        with self._lock:
            pair = self._by_access.get(token)
            user = self._users.get(pair.user_id) if pair else None
        if user is None:
            return _api_error(401, "Bad credentials")
        return web.json_response(
            {"login": user.login, "id": user.id, "type": "User", "email": user.email}
        )

    async def _revoke_grant_endpoint(self, request: web.Request) -> web.Response:
        if (early := await self._arrive("revoke_grant")) is not None:
            return early
        asked = await self._app_token_request(request)
        if isinstance(asked, web.Response):
            return asked
        with self._lock:
            pair = self._by_access.get(asked.access_token)
            if pair is None or pair.client_id != asked.client_id:
                return _api_error(404, "Not Found")
            for other in list(self._by_access.values()):
                if (other.client_id, other.user_id) == (pair.client_id, pair.user_id):
                    self._drop_pair(other)
        if self.after_revoke is not None:
            await self.after_revoke()
        return web.Response(status=204)

    async def _check_token_endpoint(self, request: web.Request) -> web.Response:
        """GitHub's "check a token": 200 and the token's facts when it works, else 404."""
        if (early := await self._arrive("check_token")) is not None:
            return early
        asked = await self._app_token_request(request)
        if isinstance(asked, web.Response):
            return asked
        with self._lock:
            pair = self._by_access.get(asked.access_token)
            user = self._users.get(pair.user_id) if pair else None
            if pair is None or user is None or pair.client_id != asked.client_id:
                return _api_error(404, "Not Found")
        return web.json_response(
            {
                "token": pair.access_token,
                "app": {"client_id": pair.client_id},
                "user": {"login": user.login, "id": user.id},
            }
        )

    async def _app_token_request(self, request: web.Request) -> _AppTokenRequest | web.Response:
        """The app and token of a request to /applications/{client_id}/...: basic auth with
        the app's credentials and a JSON body naming the access token; else the error."""
        if (refused := _require_user_agent(request)) is not None:
            return refused
        credentials = _basic_credentials(request.headers.get(hdrs.AUTHORIZATION, ""))
        if credentials is None:
            return _api_error(401, "Requires authentication")
        client_id, client_secret = credentials
        with self._lock:
            if not self._client_ok(client_id, client_secret):
                return _api_error(401, "Bad credentials")
        if client_id != request.match_info["client_id"]:
            return _api_error(404, "Not Found")
        try:
            body = await request.json()
        except ValueError:
            return _api_error(400, "Problems parsing JSON")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return _api_error(422, 'Invalid request.\n\n"access_token" wasn\'t supplied.')
        return _AppTokenRequest(client_id, token)


@dataclass(frozen=True)
class _AppTokenRequest:
    client_id: str
    access_token: str = field(repr=False)


@asynccontextmanager
async def start_fake_github(
    apps: Iterable[AppCredentials] = DEFAULT_APPS,
) -> AsyncIterator[FakeGitHub]:
    """Serve a fake GitHub on 127.0.0.1 (ephemeral port) from the current event loop."""
    fake = FakeGitHub(apps)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@contextmanager
def fake_github_in_thread(apps: Iterable[AppCredentials] = DEFAULT_APPS) -> Iterator[FakeGitHub]:
    """Serve a fake GitHub from a private event loop in a daemon thread.

    Use when no test event loop stays alive for the whole time the fake is needed, e.g. a
    session-wide fixture with function-scoped loops, or synchronous tests.
    """
    fake = FakeGitHub(apps)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-github", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=10)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _token(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _oauth_error(error: str, description: str) -> dict[str, object]:
    anchor = error.replace("_", "-")
    return {
        "error": error,
        "error_description": description,
        "error_uri": _TROUBLESHOOTING + "#" + anchor,
    }


def _oauth_response(request: web.Request, payload: dict[str, object]) -> web.Response:
    """Errors and successes alike are HTTP 200; the Accept header picks the encoding."""
    if "application/json" in request.headers.get(hdrs.ACCEPT, ""):
        return web.json_response(payload)
    return web.Response(
        text=urlencode({key: str(value) for key, value in payload.items()}),
        content_type="application/x-www-form-urlencoded",
    )


def _api_error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"message": message, "documentation_url": _REST_DOCS, "status": str(status)},
        status=status,
    )


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        return None
    client_id, colon, client_secret = decoded.partition(":")
    return (client_id, client_secret) if colon else None


def _bearer_token(request: web.Request) -> str | web.Response:
    """The access token a REST request carries, or the REST API's refusal of the request."""
    if (refused := _require_user_agent(request)) is not None:
        return refused
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token:
        return _api_error(401, "Requires authentication")
    return token.strip()


def _require_user_agent(request: web.Request) -> web.Response | None:
    """The REST API refuses requests without a User-Agent."""
    if request.headers.get(hdrs.USER_AGENT):
        return None
    return web.Response(
        status=403,
        text="Request forbidden by administrative rules. "
        "Please make sure your request has a User-Agent header.",
    )
