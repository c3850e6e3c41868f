"""/github/api: GitHub's REST API as the user, for whoever holds a capability, and no one else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fake_github import FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    PURGE,
    REVOKE,
    REVOKE_CAPABILITY,
    SECRET_PATTERN,
    SERVICE,
    Database,
    GraphQLClient,
    MovableClock,
    closed_port,
    issue_capability,
    store_live_token,
)

ISSUES = "/github/api/repos/octocat/hello-world/issues"


def bearer(capability: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {capability}"}


async def _capability(
    gql: GraphQLClient, clock: MovableClock, fake: FakeGitHub, **fields: Any
) -> str:
    """Alice's live token stored, her repository at GitHub, and a capability for it."""
    await store_live_token(gql, fake, clock())
    fake.repos.add("octocat", "hello-world")
    return await issue_capability(gql, **fields)


async def test_a_get_comes_back_as_github_answered_and_github_sees_only_the_token(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure GitHub's status, rate-limit headers and body come back, its cookie does not,
    and the capability never reaches GitHub nor the token the worker."""
    capability = await _capability(gql, clock, fake_github)

    response = await gql.http.get(
        "/github/api/repos/octocat/hello-world", headers=bearer(capability)
    )

    assert response.status == 200
    body = await response.json()
    assert body["full_name"] == "octocat/hello-world"
    assert response.headers["X-RateLimit-Remaining"] == "4999"
    assert response.headers["X-RateLimit-Limit"] == "5000"
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Request-Id"]
    (seen,) = fake_github.repos.seen
    scheme, _, token = seen.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    assert fake_github.login_of(token) == "octocat"
    assert "ghvcap_" not in json.dumps(list(seen.headers.items()))
    answer = json.dumps([list(response.headers.items()), body])
    assert not SECRET_PATTERN.search(answer)


async def test_head_and_query_strings_pass(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    capability = await _capability(gql, clock, fake_github)

    head = await gql.http.head("/github/api/repos/octocat/hello-world", headers=bearer(capability))
    listed = await gql.http.get(f"{ISSUES}?per_page=5&state=open", headers=bearer(capability))

    assert head.status == 200
    assert await head.read() == b""
    assert listed.status == 200
    assert [seen.path_qs for seen in fake_github.repos.seen] == [
        "/repos/octocat/hello-world",
        "/repos/octocat/hello-world/issues?per_page=5&state=open",
    ]


async def test_a_read_capability_cannot_write_and_github_never_hears_of_it(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    capability = await _capability(gql, clock, fake_github, access="READ")

    response = await gql.http.post(ISSUES, json={"title": "x"}, headers=bearer(capability))

    assert response.status == 403
    assert await response.json() == {
        "message": "This capability is READ: it allows GET and HEAD only."
    }
    assert fake_github.repos.seen == []


async def test_a_write_is_made_as_the_user_and_audited_without_query_or_capability(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    capability = await _capability(gql, clock, fake_github, access="WRITE")

    created = await gql.http.post(
        f"{ISSUES}?via=agent", json={"title": "Fix the build"}, headers=bearer(capability)
    )
    await gql.http.get(ISSUES, headers=bearer(capability))

    assert created.status == 201
    assert (await created.json())["user"]["login"] == "octocat"
    assert fake_github.repos.issue_titles("octocat", "hello-world") == ["Fix the build"]
    events = await database.fetch(
        "SELECT actor_role, actor_id, subject_user_id, github_app_type, detail FROM audit_events "
        "WHERE action = 'github_proxy_write'"
    )
    assert len(events) == 1
    event = events[0]
    assert (event["actor_role"], event["actor_id"], event["subject_user_id"]) == (
        "service",
        "commit-worker",
        "alice",
    )
    capability_id = (await database.fetch("SELECT id FROM github_capabilities"))[0]["id"]
    assert json.loads(event["detail"]) == {
        "capability_id": str(capability_id),
        "route": "api",
        "method": "POST",
        "repository": "octocat/hello-world",
        "path": "/repos/octocat/hello-world/issues",
        "status": 201,
    }
    everything = json.dumps(await database.fetch("SELECT * FROM audit_events"), default=str)
    assert not SECRET_PATTERN.search(everything)


async def test_a_scoped_capability_reaches_its_repository_pages_and_who_the_user_is(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure GitHub's pagination links, which name the repository by id, come back as
    proxy links the scoped capability may follow."""
    capability = await _capability(
        gql, clock, fake_github, access="WRITE", repositories=["octocat/hello-world"]
    )
    fake_github.repos.add("octocat", "other")
    for title in ("one", "two", "three"):
        await gql.http.post(ISSUES, json={"title": title}, headers=bearer(capability))

    first = await gql.http.get(f"{ISSUES}?per_page=2", headers=bearer(capability))
    next_url = first.links["next"]["url"]
    second = await gql.http.session.get(next_url, headers=bearer(capability))
    user = await gql.http.get("/github/api/user", headers=bearer(capability))
    other = await gql.http.get("/github/api/repos/octocat/other", headers=bearer(capability))

    assert [issue["title"] for issue in await first.json()] == ["one", "two"]
    assert str(next_url) == str(gql.http.make_url(f"{ISSUES}?per_page=2&page=2")), (
        "a link below the proxy, by name"
    )
    assert [issue["title"] for issue in await second.json()] == ["three"]
    assert (await user.json())["login"] == "octocat"
    assert other.status == 403
    assert (await other.json())["message"] == (
        "This capability does not cover the repository octocat/other."
    )


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer not-a-capability",
        "Basic !!!",
        "Basic eDo=",
        "Digest username=x",
        "Bearer ghvcap_" + "A" * 43,
        "Bearer ghvcap_" + "A" * 42 + "-",
        "Bearer ghu_" + "A" * 36,
    ],
)
async def test_requests_without_a_live_capability_are_401(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    authorization: str | None,
) -> None:
    await _capability(gql, clock, fake_github)
    headers = {"Authorization": authorization} if authorization else {}

    response = await gql.http.get("/github/api/user", headers=headers)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="ghvault"'
    assert "capability" in (await response.json())["message"]
    assert fake_github.repos.seen == []
    assert fake_github.calls["user"] == 0


async def test_an_expired_revoked_or_orphaned_capability_is_401(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure each way a capability ends stops it at the proxy."""
    expiring = await _capability(gql, clock, fake_github, ttlSeconds=60)
    revoked_issue = await gql.data(
        'mutation { issueGithubCapability(input: {userId: "alice"}) {'
        " ... on GithubCapabilityIssued { id capability } } }",
        auth=SERVICE,
    )
    revoked = revoked_issue["issueGithubCapability"]
    orphaned = await issue_capability(gql)
    assert (await gql.http.get("/github/api/user", headers=bearer(expiring))).status == 200

    await gql.data(REVOKE_CAPABILITY, {"id": revoked["id"]}, auth=SERVICE)
    clock.advance(timedelta(seconds=60))
    assert (await gql.http.get("/github/api/user", headers=bearer(expiring))).status == 401
    assert (
        await gql.http.get("/github/api/user", headers=bearer(revoked["capability"]))
    ).status == 401
    assert (await gql.http.get("/github/api/user", headers=bearer(orphaned))).status == 200
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    assert (await gql.http.get("/github/api/user", headers=bearer(orphaned))).status == 401


async def test_basic_credentials_carry_a_capability_too(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Tools that only speak Basic put it in the password, or alone as the user name."""
    capability = await _capability(gql, clock, fake_github)
    for user, password in (("x", capability), (capability, "")):
        response = await gql.http.get(
            "/github/api/user",
            headers={"Authorization": aiohttp.encode_basic_auth(user, password)},
        )
        assert response.status == 200


@pytest.mark.parametrize("proxy_env", [{"GITHUB_PROXY_REQUESTS_PER_MINUTE": "2"}])
async def test_a_runaway_capability_is_slowed_down_alone(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    capability = await _capability(gql, clock, fake_github)
    other = await issue_capability(gql)

    statuses = [
        (await gql.http.get("/github/api/user", headers=bearer(capability))).status
        for _ in range(2)
    ]
    limited = await gql.http.get("/github/api/user", headers=bearer(capability))
    other_status = (await gql.http.get("/github/api/user", headers=bearer(other))).status
    clock.advance(timedelta(seconds=30))
    again = await gql.http.get("/github/api/user", headers=bearer(capability))

    assert statuses == [200, 200]
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "30"
    assert "try again in 30 s" in (await limited.json())["message"]
    assert other_status == 200
    assert again.status == 200


@pytest.mark.parametrize("proxy_env", [{"GITHUB_PROXY_MAX_API_BODY_BYTES": "1024"}])
async def test_bodies_over_the_limit_are_refused_whether_announced_or_not(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    capability = await _capability(gql, clock, fake_github, access="WRITE")
    big = json.dumps({"title": "x", "body": "y" * 2000}).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for offset in range(0, len(big), 256):
            yield big[offset : offset + 256]

    announced = await gql.http.post(ISSUES, data=big, headers=bearer(capability))
    streamed = await gql.http.post(ISSUES, data=chunked(), headers=bearer(capability))
    small = await gql.http.post(ISSUES, json={"title": "fits"}, headers=bearer(capability))

    assert announced.status == 413
    assert streamed.status == 413
    assert "1024 bytes" in (await streamed.json())["message"]
    assert small.status == 201
    assert fake_github.repos.issue_titles("octocat", "hello-world") == ["fits"]


async def test_the_token_is_refreshed_when_it_nears_expiry(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a token within minutes of expiry is refreshed before it is used."""
    old = await store_live_token(gql, fake_github, clock(), expires_in=timedelta(minutes=4))
    capability = await issue_capability(gql)

    response = await gql.http.get("/github/api/rate_limit", headers=bearer(capability))

    assert response.status == 200
    assert fake_github.calls["refresh"] == 1
    token = fake_github.repos.seen[0].headers["Authorization"].partition(" ")[2]
    assert token != old
    assert fake_github.is_access_token_valid(token)
    assert not fake_github.is_access_token_valid(old)


@pytest.mark.parametrize(
    "proxy_env", [{"GITHUB_API_BASE_URL": f"http://127.0.0.1:{closed_port()}"}]
)
async def test_an_unreachable_github_is_a_502_and_a_warning(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, log_output: Any
) -> None:
    capability = await _capability(gql, clock, fake_github)

    response = await gql.http.get("/github/api/user", headers=bearer(capability))

    assert response.status == 502
    assert await response.json() == {"message": "GitHub is unreachable."}
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert "ERROR" not in {line["level"] for line in lines}
    assert any("did not answer" in line["message"] for line in lines)


async def test_metrics_count_routes_methods_and_outcomes_and_nothing_of_anyone(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    capability = await _capability(
        gql, clock, fake_github, access="READ", repositories=["octocat/hello-world"]
    )
    await gql.http.get(ISSUES, headers=bearer(capability))
    await gql.http.post(ISSUES, json={"title": "x"}, headers=bearer(capability))
    await gql.http.get("/github/api/repos/octocat/private-plans", headers=bearer(capability))
    await gql.http.get("/github/api/user")

    text = await (await gql.http.get("/metrics")).text()

    samples = {
        line.split(" ")[0]
        for line in text.splitlines()
        if line.startswith("ghvault_github_proxy_request_duration_seconds_count")
    }
    prefix = "ghvault_github_proxy_request_duration_seconds_count"
    assert samples == {
        f'{prefix}{{method="GET",outcome="ok",route="api"}}',
        f'{prefix}{{method="POST",outcome="forbidden",route="api"}}',
        f'{prefix}{{method="GET",outcome="forbidden",route="api"}}',
        f'{prefix}{{method="GET",outcome="unauthenticated",route="api"}}',
    }
    assert 'ghvault_github_proxy_body_bytes_total{direction="to_worker",route="api"} 2.0' in text
    for private in ("alice", "octocat", "hello-world", "private-plans", "/repos", "583231"):
        assert private not in text, private
    assert not SECRET_PATTERN.search(text)


async def test_a_web_server_elsewhere_is_never_reached(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, aiohttp_server: Any
) -> None:
    """Make sure no request line, Host header or GitHub redirect sends the token elsewhere."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        return web.Response(text="stolen")

    elsewhere_app = web.Application()
    elsewhere_app.router.add_route("*", "/{tail:.*}", record)
    elsewhere = await aiohttp_server(elsewhere_app)
    evil = f"127.0.0.1:{elsewhere.port}"
    capability = await _capability(gql, clock, fake_github)
    proxy = gql.http.server

    async def raw(request_line: str, host: str) -> int:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(
            f"{request_line}\r\nHost: {host}\r\nAuthorization: Bearer {capability}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        writer.close()
        await writer.wait_closed()
        return status

    statuses = {
        "absolute-form": await raw(f"GET http://{evil}/github/api/user HTTP/1.1", evil),
        "host header": await raw("GET /github/api/user HTTP/1.1", evil),
        "empty segment": await raw(f"GET /github/api//{evil}/user HTTP/1.1", evil),
        "encoded dots": await raw(
            "GET /github/api/repos/o/r/%2e%2e/%2e%2e/%2e%2e/user HTTP/1.1", evil
        ),
        "userinfo": await raw(f"GET /github/api@{evil}/user HTTP/1.1", evil),
    }
    fake_github.repos.redirect_to = f"http://{evil}/steal"
    redirected = await gql.http.get(
        "/github/api/rate_limit", headers=bearer(capability), allow_redirects=False
    )

    assert statuses == {
        "absolute-form": 200,
        "host header": 200,
        "empty segment": 400,
        "encoded dots": 400,
        "userinfo": 404,
    }
    assert fake_github.calls["user"] == 2, "both reached the configured GitHub"
    assert redirected.status == 302
    assert redirected.headers["Location"] == f"http://{evil}/steal"
    assert hits == []


async def test_purge_leaves_no_byte_of_the_repositories_a_user_wrote_to_on_disk(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """GDPR: repositories are named after their owner, often the user's login; the purged
    user's capabilities and audited writes keep nothing of them in the SQLite files."""
    if not database.is_sqlite:
        pytest.skip("PostgreSQL reclaims dead tuples with VACUUM, on the operator's schedule")
    await store_live_token(gql, fake_github, clock(), login="alice-purge-gh")
    fake_github.repos.add("alice-purge-gh", "secret-plans")
    capability = await issue_capability(
        gql, access="WRITE", repositories=["alice-purge-gh/secret-plans"]
    )
    created = await gql.http.post(
        "/github/api/repos/alice-purge-gh/secret-plans/issues",
        json={"title": "x"},
        headers=bearer(capability),
    )
    assert created.status == 201
    assert database.sqlite_path is not None
    folder, name = database.sqlite_path.parent, database.sqlite_path.name

    def on_disk() -> bytes:
        return b"".join(
            path.read_bytes() for path in folder.iterdir() if path.name.startswith(name)
        )

    assert b"alice-purge-gh/secret-plans" in on_disk(), "the data was on disk before"

    await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN)

    assert b"alice-purge-gh" not in on_disk()
    assert b"secret-plans" not in on_disk()


async def test_a_token_github_cannot_refresh_now_is_a_503_to_retry(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """An expired token GitHub fails to refresh right now is the proxy's 503, not the
    worker's fault."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(minutes=-1))
    capability = await issue_capability(gql)
    fake_github.fail_with_status = 502

    response = await gql.http.get("/github/api/rate_limit", headers=bearer(capability))

    assert response.status == 503
    assert "try again later" in (await response.json())["message"]
    assert fake_github.repos.seen == []
