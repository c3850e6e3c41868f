"""PyGithub, pointed at the proxy with a capability as its token, works as against GitHub.

PyGithub is synchronous: each test drives it from a thread while the event
loop serves the proxy and the fake GitHub.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from github import Auth, Github, GithubException

from tests.fake_github import FakeGitHub
from tests.helpers import GraphQLClient, MovableClock, issue_capability, store_live_token

REPOSITORY = "octocat/hello-world"


def client(gql: GraphQLClient, capability: str, *, per_page: int = 30) -> Github:
    """PyGithub as a GitHub Enterprise client whose API base URL is the proxy's."""
    return Github(
        auth=Auth.Token(capability),
        base_url=str(gql.http.make_url("/github/api")),
        per_page=per_page,
        retry=0,
        seconds_between_requests=0,
        seconds_between_writes=0,
    )


async def _capability(
    gql: GraphQLClient, clock: MovableClock, fake: FakeGitHub, **fields: Any
) -> str:
    """Alice's live token, two repositories of hers at GitHub, and a capability."""
    await store_live_token(gql, fake, clock())
    fake.repos.add("octocat", "hello-world")
    fake.repos.add("octocat", "other")
    return await issue_capability(gql, **fields)


async def test_pygithub_reads_writes_and_pages_as_the_user(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a client library's ordinary calls, pagination included, pass a scoped
    WRITE capability."""
    capability = await _capability(
        gql, clock, fake_github, access="WRITE", repositories=[REPOSITORY]
    )

    def work() -> tuple[str, str, list[str], tuple[int, int]]:
        github = client(gql, capability, per_page=2)
        login = github.get_user().login
        repository = github.get_repo(REPOSITORY)
        for title in ("one", "two", "three", "four", "five"):
            repository.create_issue(title=title, body="made through ghvault")
        titles = [issue.title for issue in repository.get_issues()]
        return login, repository.full_name, titles, github.rate_limiting

    login, full_name, titles, (remaining, limit) = await asyncio.to_thread(work)

    assert (login, full_name) == ("octocat", REPOSITORY)
    assert titles == ["one", "two", "three", "four", "five"]
    assert fake_github.repos.issue_titles("octocat", "hello-world") == titles
    assert limit == 5000
    assert remaining < limit


async def test_pygithub_reports_the_proxys_refusals(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """A READ capability, a repository outside it and a made-up capability fail as GitHub
    errors would, with ghvault's reason."""
    capability = await _capability(
        gql, clock, fake_github, access="READ", repositories=[REPOSITORY]
    )

    def work() -> tuple[GithubException, GithubException, GithubException]:
        github = client(gql, capability)
        repository = github.get_repo(REPOSITORY)
        with pytest.raises(GithubException) as write:
            repository.create_issue(title="nope")
        with pytest.raises(GithubException) as elsewhere:
            github.get_repo("octocat/other")
        with pytest.raises(GithubException) as made_up:
            client(gql, "ghvcap_" + "0" * 43).get_user().login  # noqa: B018 -- the call is the test
        return write.value, elsewhere.value, made_up.value

    write, elsewhere, made_up = await asyncio.to_thread(work)

    assert write.status == 403
    assert write.data == {"message": "This capability is READ: it allows GET and HEAD only."}
    assert elsewhere.status == 403
    assert "does not cover the repository octocat/other" in str(elsewhere.data)
    assert made_up.status == 401
    assert "live ghvault capability" in str(made_up.data)
    assert fake_github.repos.issue_titles("octocat", "hello-world") == []
