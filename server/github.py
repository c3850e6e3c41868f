"""HTTP client for the parts of GitHub that ghvault talks to.

Covers the OAuth web flow of a GitHub App (authorize URL, code exchange with PKCE, token
refresh), ``GET /user`` to learn who a token belongs to, asking whether a token still works,
and revoking a user's grant.

Every failure surfaces as a ``GitHubError`` subclass whose message is composed here from
fixed text, HTTP status codes and sanitised OAuth error codes only, so an exception that ends
up in a log or a GraphQL error can never leak a token, a client secret or a request body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from server.bodies import read_at_most
from server.text import is_storable

logger = logging.getLogger("ghvault.github")

API_VERSION = "2022-11-28"
USER_AGENT = "ghvault"

# GitHub warns that token lengths may change, so only the prefix and alphabet are pinned.
_ACCESS_TOKEN_RE = re.compile(r"ghu_[A-Za-z0-9_]{1,251}")
_REFRESH_TOKEN_RE = re.compile(r"ghr_[A-Za-z0-9_]{1,251}")
# GitHub's answers to these requests are at most a few KB. A larger one is not read
# (memory) nor parsed: json.loads holds the event loop (and the GIL, so a thread would
# not help) for ~130 ms per MB of `[],[],...`, and under 1 ms at this size.
MAX_ANSWER_BYTES = 64 * 1024
# OAuth error codes are echoed into exception messages, so anything unexpected is replaced.
_ERROR_CODE_RE = re.compile(r"[a-z0-9_]{1,64}")


@dataclass(frozen=True)
class GitHubApp:
    app_type: str  # "standard" | "lite"
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenGrant:
    """Tokens as GitHub issued them; the expiries are None for non-expiring tokens."""

    access_token: str = field(repr=False)
    access_token_expires_at: datetime | None
    refresh_token: str | None = field(repr=False)
    refresh_token_expires_at: datetime | None


@dataclass(frozen=True)
class GitHubUser:
    id: str  # GitHub's numeric id as a string, so storage need not care about int widths
    login: str
    email: str | None


class GitHubError(Exception):
    """Base of every failure talking to GitHub; messages never contain tokens or secrets."""


class GitHubUnavailable(GitHubError):
    """GitHub could not give a usable answer; retrying later may succeed."""


class BadRefreshToken(GitHubError):
    """The refresh token is used up, expired or revoked; the user has to authorize again."""


class BadVerificationCode(GitHubError):
    """The authorization code (or its PKCE verifier) was refused; the login must restart."""


class GitHubRejected(GitHubError):
    """GitHub refused the request for another reason, named by ``error``."""

    def __init__(self, error: str, message: str | None = None) -> None:
        self.error = error
        super().__init__(message or f"GitHub rejected the request ({error})")


def pkce_pair() -> tuple[str, str]:
    """Return ``(code_verifier, code_challenge)`` for the S256 PKCE method."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def new_client_session(timeout_seconds: float = 10.0) -> aiohttp.ClientSession:
    """Create the session a GitHubClient should share for its whole life.

    Must be called with an event loop running. The connect timeout is capped separately so
    an unreachable GitHub fails fast even when the overall budget is generous.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_seconds, connect=min(timeout_seconds, 5.0))
    return aiohttp.ClientSession(
        timeout=timeout,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )


class GitHubObserver(Protocol):
    """Told of each request and each refresh, e.g. to count them; labels are fixed words."""

    def request_done(self, endpoint: str, outcome: str, seconds: float) -> None: ...

    def refresh_done(self, outcome: str) -> None: ...


class _Unobserved:
    def request_done(self, endpoint: str, outcome: str, seconds: float) -> None:
        pass

    def refresh_done(self, outcome: str) -> None:
        pass


# How a refresh that raised ended, most specific first.
_REFRESH_FAILURES: tuple[tuple[type[GitHubError], str], ...] = (
    (BadRefreshToken, "bad_refresh_token"),
    (GitHubRejected, "rejected"),
    (GitHubError, "unavailable"),
)


class GitHubClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        oauth_base_url: str = "https://github.com",
        api_base_url: str = "https://api.github.com",
        observer: GitHubObserver | None = None,
    ) -> None:
        self._session = session
        self._oauth_base = oauth_base_url.rstrip("/")
        self._api_base = URL(api_base_url.rstrip("/"))
        self._observer = observer or _Unobserved()

    def authorize_url(
        self, app: GitHubApp, *, state: str, code_challenge: str, redirect_uri: str | None
    ) -> str:
        params = {
            "client_id": app.client_id,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if redirect_uri is not None:
            params["redirect_uri"] = redirect_uri
        return f"{self._oauth_base}/login/oauth/authorize?{urlencode(params)}"

    async def exchange_code(
        self,
        app: GitHubApp,
        *,
        code: str,
        code_verifier: str,
        redirect_uri: str | None,
        now: datetime,
    ) -> TokenGrant:
        form = {
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "code": code,
            "code_verifier": code_verifier,
        }
        if redirect_uri is not None:
            form["redirect_uri"] = redirect_uri
        body = await self._token_request("exchange", form)
        error = _oauth_error(body)
        if error in ("bad_verification_code", "invalid_grant"):
            raise BadVerificationCode(f"GitHub refused the authorization code ({error})")
        if error is not None:
            raise GitHubRejected(error)
        return _parse_grant(body, now)

    async def refresh(self, app: GitHubApp, *, refresh_token: str, now: datetime) -> TokenGrant:
        """Trade a refresh token for a new pair.

        GitHub invalidates the old refresh token and the old access token on success, so the
        caller must persist the returned grant before using it anywhere else.
        """
        try:
            grant = await self._refresh(app, refresh_token=refresh_token, now=now)
        except GitHubError as exc:
            outcome = next(name for kind, name in _REFRESH_FAILURES if isinstance(exc, kind))
            self._observer.refresh_done(outcome)
            raise
        self._observer.refresh_done("refreshed")
        return grant

    async def _refresh(self, app: GitHubApp, *, refresh_token: str, now: datetime) -> TokenGrant:
        form = {
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        }
        body = await self._token_request("refresh", form)
        error = _oauth_error(body)
        if error == "bad_refresh_token":
            raise BadRefreshToken("GitHub refused the refresh token (bad_refresh_token)")
        if error is not None:
            raise GitHubRejected(error)
        return _parse_grant(body, now)

    async def get_user(self, access_token: str) -> GitHubUser:
        headers = {**_api_headers(), "Authorization": f"Bearer {access_token}"}
        answer = await self._fetch("user", "GET", self._api_base / "user", headers=headers)
        if answer.status == 401:
            raise GitHubRejected("bad_credentials", "GitHub refused the access token (401)")
        _raise_for_api_status(answer)
        body = _json_object(answer)
        user_id = body.get("id")
        login = body.get("login")
        email = body.get("email")
        if (
            not isinstance(user_id, int)
            or isinstance(user_id, bool)
            or not isinstance(login, str)
            or not login
            or not is_storable(login)
            or not (email is None or (isinstance(email, str) and is_storable(email)))
        ):
            raise GitHubUnavailable("GitHub answered /user with an unexpected shape")
        return GitHubUser(id=str(user_id), login=login, email=email)

    async def revoke_grant(self, app: GitHubApp, *, access_token: str) -> bool:
        """Revoke every token of the user's grant for ``app``.

        Returns False when GitHub no longer knows the token, which for a caller tidying up
        means the same as success.
        """
        return await self._about_token(
            "revoke_grant", "DELETE", app, "grant", access_token=access_token, success=204
        )

    async def check_token(self, app: GitHubApp, *, access_token: str) -> bool:
        """Whether GitHub still accepts ``access_token`` of ``app`` (its "check a token").

        False when GitHub answers that it does not know the token: expired, replaced by a
        refresh, or revoked.
        """
        return await self._about_token(
            "check_token", "POST", app, "token", access_token=access_token, success=200
        )

    async def _about_token(
        self,
        endpoint: str,
        method: str,
        app: GitHubApp,
        action: str,
        *,
        access_token: str,
        success: int,
    ) -> bool:
        """A request about one token to ``/applications/{client_id}/{action}``, signed with
        the app's own credentials: True on `success`, False when GitHub does not know the
        token (404)."""
        answer = await self._fetch(
            endpoint,
            method,
            self._api_base / "applications" / app.client_id / action,
            headers={
                **_api_headers(),
                "Authorization": aiohttp.encode_basic_auth(app.client_id, app.client_secret),
            },
            json={"access_token": access_token},
        )
        if answer.status == success:
            return True
        if answer.status == 404:
            return False
        if answer.status == 401:
            raise GitHubRejected("bad_credentials", "GitHub refused the app credentials (401)")
        if answer.status == 422:
            raise GitHubRejected(
                "validation_failed", f"GitHub refused the {endpoint} request (422)"
            )
        _raise_for_api_status(answer)
        raise GitHubUnavailable(f"GitHub answered HTTP {answer.status} to a {endpoint} request")

    async def _token_request(self, endpoint: str, form: Mapping[str, str]) -> dict[str, Any]:
        answer = await self._fetch(
            endpoint,
            "POST",
            f"{self._oauth_base}/login/oauth/access_token",
            headers={"Accept": "application/json"},
            data=dict(form),
        )
        if answer.status >= 500 or answer.status == 429:
            raise GitHubUnavailable(f"GitHub answered HTTP {answer.status}")
        if answer.status != 200:
            # The token endpoint reports OAuth errors with 200; anything else is odd.
            raise GitHubRejected(f"http_{answer.status}", f"GitHub answered HTTP {answer.status}")
        return _json_object(answer)

    async def _fetch(self, endpoint: str, method: str, url: str | URL, **kwargs: Any) -> _Answer:
        """Send one request and read the whole (small) body, so every transport failure,
        including one while reading, surfaces here as GitHubUnavailable. A body past
        MAX_ANSWER_BYTES is not GitHub's kind of answer: it is refused, unread, likewise.

        Causes are dropped (``from None``): aiohttp errors can hold the request headers and
        JSON errors the body, either of which may carry a token into a logged traceback.
        """
        started = time.monotonic()
        try:
            # Never follow redirects: a hop elsewhere could carry the token or secret along.
            async with self._session.request(method, url, allow_redirects=False, **kwargs) as resp:
                body = await read_at_most(resp.content, resp.content_length, MAX_ANSWER_BYTES)
                if body is None:
                    # Not waiting for the rest: the connection goes, not back to the pool.
                    resp.close()
        except TimeoutError:
            elapsed = time.monotonic() - started
            logger.warning("github %s timed out after %.3fs", endpoint, elapsed)
            self._observer.request_done(endpoint, "timeout", elapsed)
            raise GitHubUnavailable("GitHub did not answer in time") from None
        except aiohttp.ClientError as exc:
            elapsed = time.monotonic() - started
            kind = type(exc).__name__
            logger.warning("github %s failed after %.3fs: %s", endpoint, elapsed, kind)
            self._observer.request_done(endpoint, "unreachable", elapsed)
            raise GitHubUnavailable(f"GitHub could not be reached ({kind})") from None
        elapsed = time.monotonic() - started
        if body is None:
            logger.warning(
                "github %s answered more than %d bytes; refused", endpoint, MAX_ANSWER_BYTES
            )
            self._observer.request_done(endpoint, "too_large", elapsed)
            raise GitHubUnavailable(f"GitHub answered with more than {MAX_ANSWER_BYTES} bytes")
        logger.debug("github %s answered %s after %.3fs", endpoint, resp.status, elapsed)
        self._observer.request_done(endpoint, str(resp.status), elapsed)
        return _Answer(status=resp.status, headers=resp.headers, body=body)


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


def _api_headers() -> dict[str, str]:
    return {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}


def _raise_for_api_status(answer: _Answer) -> None:
    """Raise for statuses other than success; throttling counts as GitHub being unavailable."""
    status = answer.status
    rate_limited = status == 403 and answer.headers.get("X-RateLimit-Remaining") == "0"
    if status >= 500 or status == 429 or rate_limited:
        raise GitHubUnavailable(f"GitHub answered HTTP {status}")
    if status >= 300:
        raise GitHubRejected(f"http_{status}", f"GitHub answered HTTP {status}")


def _json_object(answer: _Answer) -> dict[str, Any]:
    try:
        body = json.loads(answer.body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the stack
        raise GitHubUnavailable("GitHub answered with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise GitHubUnavailable("GitHub answered with JSON that is not an object")
    return body


def _oauth_error(body: Mapping[str, Any]) -> str | None:
    if "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, str) and _ERROR_CODE_RE.fullmatch(error):
        return error
    return "unknown_error"


def _parse_grant(body: Mapping[str, Any], now: datetime) -> TokenGrant:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not _ACCESS_TOKEN_RE.fullmatch(access_token):
        raise GitHubUnavailable("GitHub answered without a well-formed user access token")
    token_type = body.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise GitHubUnavailable("GitHub answered with an unexpected token_type")
    refresh_token = body.get("refresh_token")
    if refresh_token is not None and (
        not isinstance(refresh_token, str) or not _REFRESH_TOKEN_RE.fullmatch(refresh_token)
    ):
        raise GitHubUnavailable("GitHub answered with a malformed refresh token")
    return TokenGrant(
        access_token=access_token,
        access_token_expires_at=_expiry(body, "expires_in", now),
        refresh_token=refresh_token,
        refresh_token_expires_at=(
            _expiry(body, "refresh_token_expires_in", now) if refresh_token else None
        ),
    )


def _expiry(body: Mapping[str, Any], key: str, now: datetime) -> datetime | None:
    """Absent means the token does not expire (the app has token expiration turned off)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise GitHubUnavailable(f"GitHub answered with an invalid {key}")
    return now + timedelta(seconds=value)
