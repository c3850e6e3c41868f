"""/github/git: the real git CLI clones, fetches and pushes through the proxy to a real git host.

The host is `git http-backend` (tests/git_host.py), which accepts only the
user's live access token; the worker's remote carries a capability.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fake_github import FakeGitHub
from tests.git_host import GitHost, GitResult, run_git
from tests.helpers import (
    ISSUE_CAPABILITY,
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

REPOSITORY = "octocat/hello-world"

CHECKOUT = """
mutation { checkoutGithubToken(userId: "alice") {
  ... on CheckoutSuccess { refreshed } ... on OperationError { code } } }
"""


def remote(gql: GraphQLClient, capability: str, repository: str = REPOSITORY) -> str:
    url = gql.http.make_url(f"/github/git/{repository}.git")
    return str(url.with_user("x").with_password(capability))


class Worker:
    """A sandboxed worker's checkouts under one folder, with git's home beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"

    async def git(self, *args: str, cwd: Path | None = None) -> GitResult:
        result = await run_git(*args, cwd=cwd or self.root, home=self.home)
        # No token reaches the worker, and git keeps the capability out of what it prints.
        assert not SECRET_PATTERN.search(result.stdout + result.stderr)
        return result

    async def clone(self, url: str, name: str) -> GitResult:
        return await self.git("clone", url, str(self.root / name))

    async def commit(self, name: str, file: str, text: str) -> None:
        checkout = self.root / name
        await asyncio.to_thread((checkout / file).write_text, text)
        assert (await self.git("add", file, cwd=checkout)).returncode == 0
        assert (await self.git("commit", "-q", "-m", f"add {file}", cwd=checkout)).returncode == 0

    async def push(self, name: str) -> GitResult:
        return await self.git("push", "origin", "HEAD:main", cwd=self.root / name)


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    (tmp_path / "worker" / "home").mkdir(parents=True)
    return Worker(tmp_path / "worker")


async def _seeded(git_host: GitHost, worker: Worker, repository: str = REPOSITORY) -> Path:
    """The host's repository, with one commit pushed to it straight, not through the proxy."""
    owner, name = repository.split("/")
    bare = git_host.create_repository(owner, name)
    seed = worker.root / f"seed-{name}"
    assert (await worker.git("init", "-q", "-b", "main", str(seed))).returncode == 0
    await worker.commit(f"seed-{name}", "README.md", "hello\n")
    assert (await worker.git("push", "-q", str(bare), "HEAD:main", cwd=seed)).returncode == 0
    return bare


async def _log(worker: Worker, bare: Path) -> list[str]:
    result = await worker.git("--git-dir", str(bare), "log", "--format=%s", "main")
    return result.stdout.split()


async def _alice(gql: GraphQLClient, clock: MovableClock, fake: FakeGitHub, **fields: Any) -> str:
    await store_live_token(
        gql, fake, clock(), expires_in=fields.pop("expires_in", timedelta(hours=8))
    )
    return await issue_capability(gql, **fields)


async def test_clone_fetch_and_push_as_the_user(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    git_host: GitHost,
    worker: Worker,
    database: Database,
) -> None:
    """Make sure git works through the proxy as against GitHub, each push audited once."""
    bare = await _seeded(git_host, worker)
    capability = await _alice(gql, clock, fake_github, access="WRITE", repositories=[REPOSITORY])

    cloned = await worker.clone(remote(gql, capability), "one")
    await worker.commit("one", "fix.txt", "fixed\n")
    pushed = await worker.push("one")
    assert (await worker.clone(remote(gql, capability), "two")).returncode == 0
    await worker.commit("two", "more.txt", "more\n")
    assert (await worker.push("two")).returncode == 0
    fetched = await worker.git("pull", "-q", "origin", "main", cwd=worker.root / "one")

    assert cloned.returncode == 0, cloned.stderr
    assert pushed.returncode == 0, pushed.stderr
    assert fetched.returncode == 0, fetched.stderr
    assert (worker.root / "one" / "more.txt").exists()
    assert await _log(worker, bare) == ["add", "more.txt", "add", "fix.txt", "add", "README.md"]
    assert all(authorized for _, _, authorized in git_host.seen)
    events = await database.fetch(
        "SELECT detail FROM audit_events WHERE action = 'github_proxy_write' ORDER BY id"
    )
    details = [json.loads(event["detail"]) for event in events]
    assert [
        (d["route"], d["method"], d["repository"], d["path"], d["status"]) for d in details
    ] == [("git", "POST", REPOSITORY, f"/{REPOSITORY}.git/git-receive-pack", 200)] * 2


async def test_read_clones_but_cannot_push(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    git_host: GitHost,
    worker: Worker,
) -> None:
    bare = await _seeded(git_host, worker)
    capability = await _alice(gql, clock, fake_github, access="READ")

    cloned = await worker.clone(remote(gql, capability), "one")
    await worker.commit("one", "sneaky.txt", "x\n")
    pushed = await worker.push("one")

    assert cloned.returncode == 0, cloned.stderr
    assert pushed.returncode != 0
    assert "403" in pushed.stderr
    assert await _log(worker, bare) == ["add", "README.md"]
    assert not any(path.endswith("receive-pack") for _, path, _ in git_host.seen)


async def test_a_repository_outside_the_capability_cannot_be_cloned(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    git_host: GitHost,
    worker: Worker,
) -> None:
    await _seeded(git_host, worker, "octocat/other")
    capability = await _alice(gql, clock, fake_github, repositories=[REPOSITORY])

    cloned = await worker.clone(remote(gql, capability, "octocat/other"), "other")

    assert cloned.returncode != 0
    assert "403" in cloned.stderr
    assert git_host.seen == []


async def test_an_expired_or_revoked_capability_gets_401(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    git_host: GitHost,
    worker: Worker,
) -> None:
    await _seeded(git_host, worker)
    expiring = await _alice(gql, clock, fake_github, ttlSeconds=60)
    revoked = await gql.data(ISSUE_CAPABILITY, {"input": {"userId": "alice"}}, auth=SERVICE)
    issued = revoked["issueGithubCapability"]
    await gql.data(REVOKE_CAPABILITY, {"id": issued["id"]}, auth=SERVICE)
    revoked = issued["capability"]
    clock.advance(timedelta(seconds=60))

    for capability in (expiring, revoked):
        cloned = await worker.clone(remote(gql, capability), f"c{capability[-6:]}")
        assert cloned.returncode != 0
        assert "Authentication failed" in cloned.stderr
    assert git_host.seen == []


async def test_a_refresh_during_a_long_push_does_not_break_it(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    git_host: GitHost,
    worker: Worker,
) -> None:
    """Make sure a push in flight holds a window on its token: a checkout meanwhile that
    would refresh it hands out the same token instead, and the push goes through."""
    bare = await _seeded(git_host, worker)
    capability = await _alice(
        gql, clock, fake_github, access="WRITE", ttlSeconds=3600, expires_in=timedelta(minutes=10)
    )
    assert (await worker.clone(remote(gql, capability), "one")).returncode == 0
    await worker.commit("one", "long.txt", "long push\n")
    git_host.hold_pushes = asyncio.Event()

    push = asyncio.create_task(worker.push("one"))
    await git_host.push_arrived.wait()
    clock.advance(timedelta(minutes=6))
    refreshed = await gql.data(CHECKOUT, auth=SERVICE)
    git_host.hold_pushes.set()
    pushed = await push
    await worker.commit("one", "after.txt", "after the refresh\n")
    again = await worker.push("one")

    assert refreshed["checkoutGithubToken"] == {"refreshed": False}
    assert pushed.returncode == 0, pushed.stderr
    assert again.returncode == 0, again.stderr
    assert await _log(worker, bare) == ["add", "after.txt", "add", "long.txt", "add", "README.md"]


@pytest.mark.parametrize(
    "proxy_env", [{"GITHUB_GIT_BASE_URL": f"http://127.0.0.1:{closed_port()}"}]
)
async def test_an_unreachable_git_host_is_a_502(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, worker: Worker
) -> None:
    capability = await _alice(gql, clock, fake_github)

    listed = await worker.git("ls-remote", remote(gql, capability))

    assert listed.returncode != 0
    assert "502" in listed.stderr


async def test_git_is_asked_for_credentials_and_refused_without_a_capability(
    gql: GraphQLClient, git_host: GitHost
) -> None:
    """git sends its password only once challenged: an anonymous request gets Basic's 401."""
    response = await gql.http.get(
        f"/github/git/{REPOSITORY}.git/info/refs", params={"service": "git-upload-pack"}
    )

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="ghvault"'
    assert "capability" in await response.text()
    assert git_host.seen == []
