"""What a proxied request may reach: paths that cannot leave the tree, and capabilities' rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.enums import AppType, CapabilityAccess
from server.github_proxy.capabilities import Capability
from server.github_proxy.scope import (
    Refused,
    Route,
    Target,
    api_target,
    decoded_segments,
    git_target,
    refusal,
)


def capability(
    access: CapabilityAccess = CapabilityAccess.WRITE, repositories: tuple[str, ...] = ()
) -> Capability:
    return Capability(
        id="c1",
        user_id="alice",
        app_type=AppType.STANDARD,
        github_user_id="583231",
        repositories=frozenset(repositories),
        access=access,
        issued_by="commit-worker",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        credential_version=1,
    )


def api(method: str, path: str, query: str = "") -> Target:
    target = api_target(method, "/github/api" + path, query)
    assert isinstance(target, Target), target
    return target


@pytest.mark.parametrize(
    "path",
    [
        "/repos/o/r/../../other/r",
        "/repos/o/r/%2e%2e/%2E%2E/other/r",
        "/repos/o/r/.",
        "/repos/o%2Fr/x",
        "/repos/o/r%5C..%5Cx",
        "/repos//o/r",
        "/user/",
        "/repos/o/r/%00",
        "/repos/o/r/%0d%0aHost:%20evil",
        "/repos/o/r/%ff",
        "/repos/o/r/\\x",
        "/repos/o/r/caf\u00e9",
        "/repos/o/r/%zz",
        "/repos/o/r/a b",
    ],
)
def test_paths_that_could_leave_their_place_are_refused(path: str) -> None:
    """Make sure dot segments, hidden slashes, control codes and non-ASCII never reach GitHub."""
    target = api_target("GET", "/github/api" + path, "")
    assert isinstance(target, Refused)
    assert target.status == 400


def test_a_path_is_forwarded_exactly_as_sent() -> None:
    """Percent-escapes GitHub needs (a file name with a space) pass through undecoded."""
    target = api("GET", "/repos/Octocat/Hello-World/contents/docs/read%20me.md", "ref=main&x=%2F")
    assert target.path == "/repos/Octocat/Hello-World/contents/docs/read%20me.md"
    assert target.query == "ref=main&x=%2F"
    assert target.repository == "octocat/hello-world"


def test_only_paths_below_the_prefix_are_api_targets() -> None:
    """An escaped prefix is not the prefix: the proxy reads what was sent, not what it means."""
    assert isinstance(api_target("GET", "/github/%61pi/user", ""), Refused)
    assert isinstance(api_target("GET", "/github/apix/user", ""), Refused)
    assert api("GET", "").path == "/"


@given(st.text(alphabet="/.%2eEfF5cC0aA\\:@?#x", max_size=24))
def test_no_accepted_path_has_a_dot_segment_once_decoded(raw: str) -> None:
    segments = decoded_segments(raw)
    if not isinstance(segments, Refused):
        assert not {".", "..", ""} & set(segments)
        assert not any("/" in segment or "\\" in segment for segment in segments)


@pytest.mark.parametrize(
    ("method", "path", "query", "write", "audited"),
    [
        ("GET", "/octocat/hello.git/info/refs", "service=git-upload-pack", False, False),
        ("GET", "/octocat/hello/info/refs", "service=git-upload-pack", False, False),
        ("GET", "/octocat/hello.git/info/refs", "service=git-receive-pack", True, False),
        ("POST", "/octocat/hello.git/git-upload-pack", "", False, False),
        ("POST", "/octocat/hello.git/git-receive-pack", "", True, True),
    ],
)
def test_git_smart_http_targets(
    method: str, path: str, query: str, write: bool, audited: bool
) -> None:
    """A push is a write (its ref discovery too), and only the pack it sends is audited."""
    target = git_target(method, "/github/git" + path, query)
    assert isinstance(target, Target)
    assert (target.route, target.repository) == (Route.GIT, "octocat/hello")
    assert target.path.startswith("/octocat/hello.git/")
    assert (target.write, target.audited) == (write, audited)


@pytest.mark.parametrize(
    ("method", "path", "query", "status"),
    [
        ("GET", "/octocat/hello.git/info/refs", "", 404),
        ("GET", "/octocat/hello.git/info/refs", "service=git-upload-pack&x=1", 404),
        ("GET", "/octocat/hello.git/HEAD", "", 404),
        ("GET", "/octocat/hello.git/objects/info/packs", "", 404),
        ("GET", "/octocat/hello.git/git-upload-pack", "", 405),
        ("POST", "/octocat/hello.git/info/refs", "service=git-upload-pack", 405),
        ("GET", "/octocat", "", 404),
        ("GET", "/-bad/hello.git/info/refs", "service=git-upload-pack", 404),
        ("GET", "/octocat/..git/info/refs", "service=git-upload-pack", 404),
    ],
)
def test_anything_but_smart_http_is_refused(
    method: str, path: str, query: str, status: int
) -> None:
    target = git_target(method, "/github/git" + path, query)
    assert isinstance(target, Refused)
    assert target.status == status


def test_read_allows_get_and_head_only() -> None:
    read = capability(CapabilityAccess.READ)
    assert refusal(read, api("GET", "/repos/o/r/issues")) is None
    assert refusal(read, api("HEAD", "/repos/o/r")) is None
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        refused = refusal(read, api(method, "/repos/o/r/issues"))
        assert refused is not None
        assert (refused.status, refused.message) == (
            403,
            "This capability is READ: it allows GET and HEAD only.",
        )
    assert refusal(capability(CapabilityAccess.WRITE), api("POST", "/repos/o/r/issues")) is None


def test_read_cannot_push() -> None:
    target = git_target("POST", "/github/git/o/r.git/git-receive-pack", "")
    assert isinstance(target, Target)
    refused = refusal(capability(CapabilityAccess.READ), target)
    assert refused is not None
    assert "git fetch and clone" in refused.message


def test_repositories_scope_every_route() -> None:
    """Make sure a scoped capability reaches its repositories, GET /user and nothing else."""
    scoped = capability(repositories=("octocat/hello",))
    assert refusal(scoped, api("POST", "/repos/Octocat/Hello/issues")) is None
    assert refusal(scoped, api("GET", "/user")) is None
    assert refusal(scoped, api("GET", "/rate_limit")) is None
    elsewhere = refusal(scoped, api("GET", "/repos/octocat/other"))
    assert elsewhere is not None
    assert elsewhere.message == "This capability does not cover the repository octocat/other."
    for method, path in (
        ("PATCH", "/user"),
        ("GET", "/user/repos"),
        ("GET", "/repositories/1296269/issues"),
        ("POST", "/graphql"),
        ("GET", "/search/code"),
    ):
        assert refusal(scoped, api(method, path)) is not None, path
    clone = git_target("GET", "/github/git/octocat/other.git/info/refs", "service=git-upload-pack")
    assert isinstance(clone, Target)
    assert refusal(scoped, clone) is not None


def test_without_repositories_everything_the_token_reaches_passes() -> None:
    unscoped = capability()
    for method, path in (("GET", "/user/repos"), ("POST", "/graphql"), ("GET", "/search/code")):
        assert refusal(unscoped, api(method, path)) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/user/keys"),
        ("POST", "/user/gpg_keys"),
        ("POST", "/user/ssh_signing_keys"),
        ("POST", "/authorizations"),
        ("POST", "/repos/octocat/hello/keys"),
        ("POST", "/REPOS/octocat/hello/Keys"),
    ],
)
def test_no_capability_creates_a_credential_that_outlives_it(method: str, path: str) -> None:
    """A key added through the proxy would keep working after the capability ended."""
    for repositories in ((), ("octocat/hello",)):
        refused = refusal(capability(repositories=repositories), api(method, path))
        assert refused is not None
        assert refused.status == 403
    assert refusal(capability(), api("GET", "/user/keys")) is None
