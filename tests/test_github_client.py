"""The GitHub client against the fake GitHub, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from server.github import (
    MAX_ANSWER_BYTES,
    BadRefreshToken,
    BadVerificationCode,
    GitHubApp,
    GitHubClient,
    GitHubError,
    GitHubRejected,
    GitHubUnavailable,
    TokenGrant,
    new_client_session,
    pkce_pair,
)
from tests.fake_github import (
    LITE_APP,
    STANDARD_APP,
    FakeGitHub,
    fake_github_in_thread,
    start_fake_github,
)

STANDARD = GitHubApp("standard", STANDARD_APP.client_id, STANDARD_APP.client_secret)
LITE = GitHubApp("lite", LITE_APP.client_id, LITE_APP.client_secret)
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
USER_ID = 583231
LOGIN = "octocat"

ACCESS_RE = re.compile(r"ghu_[A-Za-z0-9]{36}")
REFRESH_RE = re.compile(r"ghr_[A-Za-z0-9]{76}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with start_fake_github() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    session = new_client_session(timeout_seconds=0.5)
    yield session
    await session.close()


@pytest.fixture
def client(fake: FakeGitHub, session: aiohttp.ClientSession) -> GitHubClient:
    return GitHubClient(session, oauth_base_url=fake.base_url, api_base_url=fake.base_url)


async def login(
    fake: FakeGitHub, client: GitHubClient, app: GitHubApp = STANDARD, user_id: int = USER_ID
) -> TokenGrant:
    """Run the web flow the way the service does: PKCE pair, code, exchange."""
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=app.client_id,
        github_user_id=user_id,
        login=f"user{user_id}",
        code_challenge=challenge,
    )
    return await client.exchange_code(
        app, code=code, code_verifier=verifier, redirect_uri=None, now=NOW
    )


def test_pkce_pair_is_s256() -> None:
    """The challenge must be what GitHub computes from the verifier, or every login fails."""
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


def test_authorize_url_carries_state_and_challenge() -> None:
    """The user is sent to GitHub's authorize page with everything the callback checks."""
    client = GitHubClient(None, oauth_base_url="https://ghe.example/")  # type: ignore[arg-type]
    url = urlsplit(
        client.authorize_url(
            STANDARD, state="st&ate", code_challenge="chal", redirect_uri="https://v.example/cb?x=1"
        )
    )
    assert (url.scheme, url.netloc, url.path) == ("https", "ghe.example", "/login/oauth/authorize")
    assert parse_qs(url.query) == {
        "client_id": [STANDARD.client_id],
        "state": ["st&ate"],
        "code_challenge": ["chal"],
        "code_challenge_method": ["S256"],
        "redirect_uri": ["https://v.example/cb?x=1"],
    }
    bare = client.authorize_url(STANDARD, state="s", code_challenge="c", redirect_uri=None)
    assert "redirect_uri" not in parse_qs(urlsplit(bare).query)


async def test_exchange_with_correct_verifier(fake: FakeGitHub, client: GitHubClient) -> None:
    """A good code and verifier give a grant shaped like GitHub's, with absolute expiries."""
    grant = await login(fake, client)
    assert ACCESS_RE.fullmatch(grant.access_token)
    assert grant.refresh_token is not None
    assert REFRESH_RE.fullmatch(grant.refresh_token)
    assert grant.access_token_expires_at == NOW + timedelta(seconds=28800)
    assert grant.refresh_token_expires_at == NOW + timedelta(seconds=15811200)
    assert fake.is_access_token_valid(grant.access_token)
    assert fake.is_refresh_token_valid(grant.refresh_token)


async def test_exchange_converts_now_to_utc(fake: FakeGitHub, client: GitHubClient) -> None:
    """Expiries are UTC whatever zone the caller's clock is in; naive clocks are a bug."""
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=STANDARD.client_id, github_user_id=1, login="a", code_challenge=challenge
    )
    local = NOW.astimezone(datetime.now().astimezone().tzinfo)
    grant = await client.exchange_code(
        STANDARD, code=code, code_verifier=verifier, redirect_uri=None, now=local
    )
    assert grant.access_token_expires_at is not None
    assert grant.access_token_expires_at.utcoffset() == timedelta(0)
    assert grant.access_token_expires_at == NOW + timedelta(seconds=28800)


async def test_wrong_verifier_is_bad_verification_code(
    fake: FakeGitHub, client: GitHubClient
) -> None:
    """PKCE protects a stolen code: without the verifier it is worthless, and it is spent."""
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=STANDARD.client_id, github_user_id=USER_ID, login=LOGIN, code_challenge=challenge
    )
    with pytest.raises(BadVerificationCode):
        await client.exchange_code(
            STANDARD, code=code, code_verifier=pkce_pair()[0], redirect_uri=None, now=NOW
        )
    with pytest.raises(BadVerificationCode):
        await client.exchange_code(
            STANDARD, code=code, code_verifier=verifier, redirect_uri=None, now=NOW
        )


async def test_code_works_once(fake: FakeGitHub, client: GitHubClient) -> None:
    """A replayed callback must not mint a second grant."""
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=STANDARD.client_id, github_user_id=USER_ID, login=LOGIN, code_challenge=challenge
    )
    await client.exchange_code(
        STANDARD, code=code, code_verifier=verifier, redirect_uri=None, now=NOW
    )
    with pytest.raises(BadVerificationCode):
        await client.exchange_code(
            STANDARD, code=code, code_verifier=verifier, redirect_uri=None, now=NOW
        )


async def test_code_of_another_app_is_refused(fake: FakeGitHub, client: GitHubClient) -> None:
    """Codes are bound to the app the user authorized."""
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=LITE.client_id, github_user_id=USER_ID, login=LOGIN, code_challenge=challenge
    )
    with pytest.raises(BadVerificationCode):
        await client.exchange_code(
            STANDARD, code=code, code_verifier=verifier, redirect_uri=None, now=NOW
        )


async def test_redirect_uri_must_match(fake: FakeGitHub, client: GitHubClient) -> None:
    """A mismatched redirect_uri is a configuration error, not a bad code."""
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=STANDARD.client_id,
        github_user_id=USER_ID,
        login=LOGIN,
        code_challenge=challenge,
        redirect_uri="https://vault.example/callback",
    )
    with pytest.raises(GitHubRejected) as info:
        await client.exchange_code(
            STANDARD,
            code=code,
            code_verifier=verifier,
            redirect_uri="https://evil.example/callback",
            now=NOW,
        )
    assert info.value.error == "redirect_uri_mismatch"


async def test_wrong_client_secret_is_rejected(fake: FakeGitHub, client: GitHubClient) -> None:
    """Bad app credentials name the error code but never echo the secret."""
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=STANDARD.client_id, github_user_id=USER_ID, login=LOGIN, code_challenge=challenge
    )
    wrong = GitHubApp("standard", STANDARD.client_id, "not-the-secret-at-all")
    with pytest.raises(GitHubRejected) as info:
        await client.exchange_code(
            wrong, code=code, code_verifier=verifier, redirect_uri=None, now=NOW
        )
    assert info.value.error == "incorrect_client_credentials"
    assert "not-the-secret-at-all" not in str(info.value)
    assert "not-the-secret-at-all" not in repr(info.value)


async def test_refresh_rotates_and_old_refresh_token_is_spent(
    fake: FakeGitHub, client: GitHubClient, session: aiohttp.ClientSession
) -> None:
    """Refresh gives a new pair and kills the old one, exactly as GitHub does."""
    old = await login(fake, client)
    assert old.refresh_token is not None
    later = NOW + timedelta(hours=9)
    new = await client.refresh(STANDARD, refresh_token=old.refresh_token, now=later)
    assert new.access_token != old.access_token
    assert new.refresh_token is not None
    assert new.refresh_token != old.refresh_token
    assert ACCESS_RE.fullmatch(new.access_token)
    assert REFRESH_RE.fullmatch(new.refresh_token)
    assert new.access_token_expires_at == later + timedelta(seconds=28800)

    assert not fake.is_access_token_valid(old.access_token)
    with pytest.raises(GitHubRejected):
        await client.get_user(old.access_token)
    assert (await client.get_user(new.access_token)).id == str(USER_ID)

    with pytest.raises(BadRefreshToken):
        await client.refresh(STANDARD, refresh_token=old.refresh_token, now=later)
    # GitHub reports a spent refresh token with HTTP 200, not a 4xx.
    async with session.post(
        f"{fake.base_url}/login/oauth/access_token",
        data={
            "client_id": STANDARD.client_id,
            "client_secret": STANDARD.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": old.refresh_token,
        },
        headers={"Accept": "application/json"},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["error"] == "bad_refresh_token"
    assert body["error_description"] == "The refresh token passed is incorrect or expired."
    assert body["error_uri"].startswith("https://docs.github.com/")


async def test_refresh_token_of_another_app_is_bad(fake: FakeGitHub, client: GitHubClient) -> None:
    """A refresh token only works with the app that issued it."""
    _, refresh_token = fake.seed_token(LITE.client_id, USER_ID, LOGIN)
    with pytest.raises(BadRefreshToken):
        await client.refresh(STANDARD, refresh_token=refresh_token, now=NOW)
    assert fake.is_refresh_token_valid(refresh_token)


async def test_get_user(fake: FakeGitHub, client: GitHubClient) -> None:
    """/user tells whose token it is; the id comes back as a string."""
    access_token, _ = fake.seed_token(
        STANDARD.client_id, USER_ID, LOGIN, email="octocat@github.example"
    )
    user = await client.get_user(access_token)
    assert (user.id, user.login, user.email) == (str(USER_ID), LOGIN, "octocat@github.example")
    other, _ = fake.seed_token(LITE.client_id, 7, "hubot")
    assert (await client.get_user(other)).email is None


async def test_get_user_with_unknown_token_is_rejected(client: GitHubClient) -> None:
    """A dead token is GitHub saying no, not GitHub being down."""
    with pytest.raises(GitHubRejected) as info:
        await client.get_user("ghu_" + "x" * 36)
    assert info.value.error == "bad_credentials"


async def test_fake_accepts_token_scheme(fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    """GitHub takes both "Bearer" and the older "token" authorization schemes."""
    access_token, _ = fake.seed_token(STANDARD.client_id, USER_ID, LOGIN)
    async with session.get(
        f"{fake.base_url}/user", headers={"Authorization": f"token {access_token}"}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["login"] == LOGIN


async def test_revoke_grant(fake: FakeGitHub, client: GitHubClient) -> None:
    """Revoking kills every token of that user's grant for that app, and nothing else."""
    first = await login(fake, client)
    second = await login(fake, client)
    other_app, _ = fake.seed_token(LITE.client_id, USER_ID, LOGIN)
    other_user = await login(fake, client, user_id=99)

    assert await client.revoke_grant(STANDARD, access_token=first.access_token) is True
    for grant in (first, second):
        assert not fake.is_access_token_valid(grant.access_token)
        assert grant.refresh_token is not None
        assert not fake.is_refresh_token_valid(grant.refresh_token)
    with pytest.raises(GitHubRejected):
        await client.get_user(first.access_token)
    assert (await client.get_user(other_app)).id == str(USER_ID)
    assert (await client.get_user(other_user.access_token)).id == "99"

    assert await client.revoke_grant(STANDARD, access_token=first.access_token) is False


async def test_revoke_grant_with_token_of_another_app_is_not_found(
    fake: FakeGitHub, client: GitHubClient
) -> None:
    """One app cannot revoke another app's grant."""
    access_token, _ = fake.seed_token(LITE.client_id, USER_ID, LOGIN)
    assert await client.revoke_grant(STANDARD, access_token=access_token) is False
    assert fake.is_access_token_valid(access_token)


async def test_revoke_grant_with_bad_app_credentials(
    fake: FakeGitHub, client: GitHubClient
) -> None:
    """Wrong basic auth is a refusal that does not reveal the secret."""
    access_token, _ = fake.seed_token(STANDARD.client_id, USER_ID, LOGIN)
    wrong = GitHubApp("standard", STANDARD.client_id, "wrong-secret-value")
    with pytest.raises(GitHubRejected) as info:
        await client.revoke_grant(wrong, access_token=access_token)
    assert "wrong-secret-value" not in str(info.value)
    assert fake.is_access_token_valid(access_token)


async def test_fake_revoke_grant_malformed_body(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    """The fake answers 422 when access_token is missing, like GitHub."""
    async with session.delete(
        f"{fake.base_url}/applications/{STANDARD.client_id}/grant",
        headers={
            "Authorization": aiohttp.encode_basic_auth(STANDARD.client_id, STANDARD.client_secret)
        },
        json={"token": "ghu_x"},
    ) as resp:
        assert resp.status == 422


async def test_check_token_tells_a_working_token_from_a_dead_one(
    fake: FakeGitHub, client: GitHubClient
) -> None:
    """Make sure check_token says True for a live token, and False once a refresh replaced
    it, GitHub expired it, or it belongs to another app."""
    grant = await login(fake, client)
    assert await client.check_token(STANDARD, access_token=grant.access_token) is True

    assert grant.refresh_token is not None
    new = await client.refresh(STANDARD, refresh_token=grant.refresh_token, now=NOW)
    assert await client.check_token(STANDARD, access_token=grant.access_token) is False
    assert await client.check_token(LITE, access_token=new.access_token) is False
    fake.expire_access_token(new.access_token)
    assert await client.check_token(STANDARD, access_token=new.access_token) is False
    assert fake.calls["check_token"] == 4


async def test_check_token_with_bad_app_credentials_is_a_refusal(
    fake: FakeGitHub, client: GitHubClient
) -> None:
    """Make sure wrong app credentials are not taken for a dead token, and the secret is not
    repeated."""
    access_token, _ = fake.seed_token(STANDARD.client_id, USER_ID, LOGIN)
    wrong = GitHubApp("standard", STANDARD.client_id, "wrong-secret-value")
    with pytest.raises(GitHubRejected) as info:
        await client.check_token(wrong, access_token=access_token)
    assert info.value.error == "bad_credentials"
    assert "wrong-secret-value" not in str(info.value)


async def test_fake_kills_both_old_tokens_on_refresh_and_notes_when(
    fake: FakeGitHub, client: GitHubClient, session: aiohttp.ClientSession
) -> None:
    """Make sure the fake enforces GitHub's rule: once a refresh token is used, it and the
    access token issued with it stop working; the REST API then answers 401."""
    grant = await login(fake, client)
    fake.repos.add("octo", "hello")
    repo = f"{fake.base_url}/repos/octo/hello"

    async def status(token: str) -> int:
        async with session.get(repo, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status

    assert await status(grant.access_token) == 200
    assert fake.killed_at(grant.access_token) is None
    before = datetime.now(UTC)
    assert grant.refresh_token is not None
    new = await client.refresh(STANDARD, refresh_token=grant.refresh_token, now=NOW)

    killed = fake.killed_at(grant.access_token)
    assert killed is not None
    assert killed >= before
    assert await status(grant.access_token) == 401
    assert await status(new.access_token) == 200
    with pytest.raises(BadRefreshToken):
        await client.refresh(STANDARD, refresh_token=grant.refresh_token, now=NOW)
    assert fake.refused == {"bad_refresh_token": 1}


def every_call(
    client: GitHubClient, fake: FakeGitHub
) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of each client method, all against live state, keyed by the fake's counter."""
    access_token, refresh_token = fake.seed_token(STANDARD.client_id, USER_ID, LOGIN)
    verifier, challenge = pkce_pair()
    code = fake.issue_code(
        client_id=STANDARD.client_id, github_user_id=USER_ID, login=LOGIN, code_challenge=challenge
    )
    return {
        "exchange": lambda: client.exchange_code(
            STANDARD, code=code, code_verifier=verifier, redirect_uri=None, now=NOW
        ),
        "refresh": lambda: client.refresh(STANDARD, refresh_token=refresh_token, now=NOW),
        "user": lambda: client.get_user(access_token),
        "revoke_grant": lambda: client.revoke_grant(STANDARD, access_token=access_token),
        "check_token": lambda: client.check_token(STANDARD, access_token=access_token),
    }


ENDPOINTS = ["exchange", "refresh", "user", "revoke_grant", "check_token"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_5xx_is_unavailable(fake: FakeGitHub, client: GitHubClient, endpoint: str) -> None:
    """A GitHub outage is retryable and says which status came back."""
    call = every_call(client, fake)[endpoint]
    fake.fail_with_status = 502
    with pytest.raises(GitHubUnavailable, match="GitHub answered HTTP 502"):
        await call()
    assert fake.calls[endpoint] == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_hang_is_unavailable(fake: FakeGitHub, client: GitHubClient, endpoint: str) -> None:
    """A GitHub that does not answer costs at most the session timeout."""
    call = every_call(client, fake)[endpoint]
    fake.hang_seconds = 5.0
    with pytest.raises(GitHubUnavailable, match="did not answer in time"):
        await call()
    assert fake.calls[endpoint] == 1


async def test_unreachable_github_is_unavailable(session: aiohttp.ClientSession) -> None:
    """A closed port is an outage, not a refusal."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base)
    with pytest.raises(GitHubUnavailable, match="could not be reached"):
        await client.get_user("ghu_" + "a" * 36)
    with pytest.raises(GitHubUnavailable):
        await client.refresh(STANDARD, refresh_token="ghr_" + "a" * 76, now=NOW)


async def test_call_counters(fake: FakeGitHub, client: GitHubClient) -> None:
    """The fake counts requests per endpoint, so tests can prove GitHub was (not) asked."""
    grant = await login(fake, client)
    assert grant.refresh_token is not None
    grant = await client.refresh(STANDARD, refresh_token=grant.refresh_token, now=NOW)
    await client.get_user(grant.access_token)
    await client.get_user(grant.access_token)
    await client.revoke_grant(STANDARD, access_token=grant.access_token)
    assert fake.calls == {"exchange": 1, "refresh": 1, "user": 2, "revoke_grant": 1}
    fake.reset()
    assert fake.calls == {}
    assert not fake.is_access_token_valid(grant.access_token)


async def test_no_token_or_secret_leaks(
    fake: FakeGitHub, client: GitHubClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Reprs, exception messages and logs never carry a token or the client secret."""
    caplog.set_level(logging.DEBUG, logger="ghvault.github")
    grant = await login(fake, client)
    assert grant.refresh_token is not None
    secrets_seen = [grant.access_token, grant.refresh_token, STANDARD.client_secret]

    assert grant.access_token not in repr(grant)
    assert grant.refresh_token not in repr(grant)
    assert STANDARD.client_secret not in repr(STANDARD)

    errors: list[GitHubError] = []
    new = await client.refresh(STANDARD, refresh_token=grant.refresh_token, now=NOW)
    with pytest.raises(BadRefreshToken) as refresh_info:
        await client.refresh(STANDARD, refresh_token=grant.refresh_token, now=NOW)
    errors.append(refresh_info.value)
    with pytest.raises(GitHubRejected) as user_info:
        await client.get_user(grant.access_token)
    errors.append(user_info.value)
    fake.fail_with_status = 503
    with pytest.raises(GitHubUnavailable) as down_info:
        await client.refresh(STANDARD, refresh_token=new.refresh_token or "", now=NOW)
    errors.append(down_info.value)
    fake.fail_with_status = None
    fake.hang_seconds = 5.0
    with pytest.raises(GitHubUnavailable) as hang_info:
        await client.revoke_grant(STANDARD, access_token=new.access_token)
    errors.append(hang_info.value)

    secrets_seen += [new.access_token, new.refresh_token or ""]
    for error in errors:
        for secret in secrets_seen:
            assert secret not in str(error)
            assert secret not in repr(error)
    for secret in secrets_seen:
        assert secret not in caplog.text
    assert "github revoke_grant timed out" in caplog.text


async def serve(aiohttp_server: Callable[..., Awaitable[object]], routes: web.RouteTableDef):
    app = web.Application()
    app.add_routes(routes)
    return await aiohttp_server(app)


async def test_unexpected_shapes_are_unavailable(
    aiohttp_server: Callable[..., Awaitable[object]], session: aiohttp.ClientSession
) -> None:
    """A body that is not what GitHub sends is treated as GitHub being broken."""
    routes = web.RouteTableDef()

    @routes.post("/login/oauth/access_token")
    async def token(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    @routes.get("/user")
    async def user(request: web.Request) -> web.Response:
        return web.json_response({"id": "583231", "login": "octocat"})

    server = await serve(aiohttp_server, routes)
    base = str(server.make_url("")).rstrip("/")
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base)
    with pytest.raises(GitHubUnavailable, match="not JSON"):
        await client.refresh(STANDARD, refresh_token="ghr_" + "a" * 76, now=NOW)
    with pytest.raises(GitHubUnavailable, match="unexpected shape"):
        await client.get_user("ghu_" + "a" * 36)


def _grant_of_size(size: int) -> bytes:
    """A well-formed grant padded with spaces to exactly `size` bytes."""
    grant = json.dumps({"access_token": "ghu_" + "a" * 36, "token_type": "bearer"}).encode()
    return grant[:-1] + b" " * (size - len(grant)) + b"}"


class _Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def request_done(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.seen.append((endpoint, outcome))

    def refresh_done(self, outcome: str) -> None:
        pass


async def test_an_answer_past_the_ceiling_is_unavailable_and_one_at_it_is_read(
    aiohttp_server: Callable[..., Awaitable[object]], session: aiohttp.ClientSession
) -> None:
    """GitHub's answers are read up to MAX_ANSWER_BYTES: one byte more is refused as
    GitHub being unavailable (and counted as too_large), exactly that many are parsed."""
    size = MAX_ANSWER_BYTES
    routes = web.RouteTableDef()

    @routes.post("/login/oauth/access_token")
    async def token(request: web.Request) -> web.Response:
        return web.Response(body=_grant_of_size(size), content_type="application/json")

    server = await serve(aiohttp_server, routes)
    base = str(server.make_url("")).rstrip("/")
    outcomes = _Outcomes()
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base, observer=outcomes)

    grant = await client.refresh(STANDARD, refresh_token="ghr_" + "b" * 76, now=NOW)
    assert grant.access_token == "ghu_" + "a" * 36

    size = MAX_ANSWER_BYTES + 1
    with pytest.raises(GitHubUnavailable, match=f"more than {MAX_ANSWER_BYTES} bytes"):
        await client.refresh(STANDARD, refresh_token="ghr_" + "b" * 76, now=NOW)
    assert outcomes.seen == [("refresh", "200"), ("refresh", "too_large")]


async def test_an_endless_answer_is_given_up_without_reading_it(
    aiohttp_server: Callable[..., Awaitable[object]], session: aiohttp.ClientSession
) -> None:
    """An answer without Content-Length that never ends (64 MB here) is refused once the
    ceiling is passed: the client goes away long before GitHub is done sending."""
    total = 64 * 1024 * 1024
    sent = 0
    finished = asyncio.Event()
    routes = web.RouteTableDef()

    @routes.get("/user")
    async def user(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * (256 * 1024)
        try:
            while sent < total:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            finished.set()
        return response

    server = await serve(aiohttp_server, routes)
    base = str(server.make_url("")).rstrip("/")
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base)

    with pytest.raises(GitHubUnavailable, match=f"more than {MAX_ANSWER_BYTES} bytes"):
        await client.get_user("ghu_" + "a" * 36)
    await finished.wait()
    # What loopback buffers hold is all that went out after the client stopped reading.
    assert sent < total // 4


async def test_json_nested_past_the_stack_is_not_json(
    aiohttp_server: Callable[..., Awaitable[object]], session: aiohttp.ClientSession
) -> None:
    """A small answer nested deeper than the parser's stack is GitHub misbehaving too."""
    routes = web.RouteTableDef()

    @routes.post("/login/oauth/access_token")
    async def token(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 50_000, content_type="application/json")

    server = await serve(aiohttp_server, routes)
    base = str(server.make_url("")).rstrip("/")
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base)
    with pytest.raises(GitHubUnavailable, match="not JSON"):
        await client.refresh(STANDARD, refresh_token="ghr_" + "b" * 76, now=NOW)


@pytest.mark.parametrize(
    "user",
    [
        {"id": USER_ID, "login": LOGIN, "email": "octo\ud800@example.com"},
        {"id": USER_ID, "login": "octo\x00cat", "email": None},
    ],
    ids=["email-with-a-lone-surrogate", "login-with-a-nul"],
)
async def test_user_text_no_database_can_store_is_unavailable(
    aiohttp_server: Callable[..., Awaitable[object]],
    session: aiohttp.ClientSession,
    user: dict[str, object],
) -> None:
    """A /user answer whose text could not be stored is GitHub misbehaving, not a crash
    at the database."""
    routes = web.RouteTableDef()

    @routes.get("/user")
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(user)

    server = await serve(aiohttp_server, routes)
    base = str(server.make_url("")).rstrip("/")
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base)
    with pytest.raises(GitHubUnavailable, match="unexpected shape"):
        await client.get_user("ghu_" + "a" * 36)


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": "gho_" + "a" * 36, "token_type": "bearer"},
        {"access_token": "ghu_" + "a" * 36, "token_type": "mac"},
        {"access_token": "ghu_" + "a" * 36, "refresh_token": "ghu_" + "b" * 76},
        {"access_token": "ghu_" + "a" * 36, "expires_in": -5},
        ["ghu_" + "a" * 36],
    ],
)
async def test_malformed_grants_are_unavailable(
    aiohttp_server: Callable[..., Awaitable[object]],
    session: aiohttp.ClientSession,
    body: object,
) -> None:
    """Only a grant that looks like a GitHub App user token grant is accepted."""
    routes = web.RouteTableDef()

    @routes.post("/login/oauth/access_token")
    async def token(request: web.Request) -> web.Response:
        return web.json_response(body)

    server = await serve(aiohttp_server, routes)
    base = str(server.make_url("")).rstrip("/")
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base)
    with pytest.raises(GitHubUnavailable) as info:
        await client.refresh(STANDARD, refresh_token="ghr_" + "a" * 76, now=NOW)
    assert "a" * 36 not in str(info.value)


async def test_non_expiring_grant(
    aiohttp_server: Callable[..., Awaitable[object]], session: aiohttp.ClientSession
) -> None:
    """Apps with token expiry turned off get no refresh token and no expiries."""
    routes = web.RouteTableDef()

    @routes.post("/login/oauth/access_token")
    async def token(request: web.Request) -> web.Response:
        return web.json_response(
            {"access_token": "ghu_" + "a" * 36, "token_type": "bearer", "scope": ""}
        )

    server = await serve(aiohttp_server, routes)
    base = str(server.make_url("")).rstrip("/")
    client = GitHubClient(session, oauth_base_url=base, api_base_url=base)
    grant = await client.exchange_code(
        STANDARD, code="c0de", code_verifier="v" * 43, redirect_uri=None, now=NOW
    )
    assert grant == TokenGrant("ghu_" + "a" * 36, None, None, None)


async def test_fake_in_thread(session: aiohttp.ClientSession) -> None:
    """The threaded fake serves the same protocol, for callers without a lasting loop."""
    with fake_github_in_thread() as fake:
        client = GitHubClient(session, oauth_base_url=fake.base_url, api_base_url=fake.base_url)
        grant = await login(fake, client)
        assert (await client.get_user(grant.access_token)).login == f"user{USER_ID}"
        fake.hang_seconds = 5.0
        with pytest.raises(GitHubUnavailable):
            await client.get_user(grant.access_token)
        assert fake.calls["user"] == 2


async def test_fake_serves_other_processes(fake: FakeGitHub) -> None:
    """Server processes started by tests reach the fake by URL, while the test awaits."""
    access_token, _ = fake.seed_token(STANDARD.client_id, USER_ID, LOGIN)
    script = (
        "import sys, urllib.request\n"
        "req = urllib.request.Request(sys.argv[1] + '/user', "
        "headers={'Authorization': 'Bearer ' + sys.argv[2], 'User-Agent': 'probe'})\n"
        "print(urllib.request.urlopen(req, timeout=5).read().decode())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, fake.base_url, access_token, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0
    assert json.loads(stdout)["login"] == LOGIN
    assert fake.calls["user"] == 1
