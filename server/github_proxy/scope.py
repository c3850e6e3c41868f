"""What a proxied request targets, and whether a capability allows it. No I/O.

A path is judged on its decoded segments, so "%2e%2e" is "..", and "%2F" a
slash hidden inside a segment: both are refused, as are empty segments and
anything not plain ASCII. A path that passes is forwarded as it was sent,
below the configured base URL: nothing in it can reach another host, and
nothing can reach a repository outside the capability.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from server.domain.enums import CapabilityAccess
from server.github_proxy.capabilities import Capability
from server.identifiers import canonical_repository

API_PREFIX = "/github/api"
GIT_PREFIX = "/github/git"
READ_METHODS = frozenset({"GET", "HEAD"})

# Outside `/repos/{owner}/{name}/...`, what a capability with repositories may still
# read: who the user is, and how much of GitHub's rate limit is left.
ALWAYS_READABLE = frozenset({("user",), ("rate_limit",)})

# RFC 3986 path characters (pchar and "/"), percent-escapes well formed.
_RAW_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_RAW_QUERY = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

GIT_SERVICES = ("git-upload-pack", "git-receive-pack")


class Route(StrEnum):
    API = "api"
    GIT = "git"


@dataclass(frozen=True)
class Target:
    """A request that may be forwarded, once a capability allows it."""

    route: Route
    method: str
    path: str  # raw, below the upstream base URL, starting with "/"
    query: str  # raw, without "?"; "" for none
    segments: tuple[str, ...]  # the path decoded, lower-cased
    repository: str | None  # canonical owner/name the request acts on
    write: bool  # needs a WRITE capability
    audited: bool  # a write of its own (git's ref discovery before a push is not)


@dataclass(frozen=True)
class Refused:
    status: int
    message: str
    outcome: str  # the metrics' outcome label


def _refused_path(message: str) -> Refused:
    return Refused(400, message, "bad_request")


def decoded_segments(raw: str) -> tuple[str, ...] | Refused:
    """The segments of a raw path below a prefix ("" or "/a/b"), decoded; or why not."""
    if not _RAW_PATH.fullmatch(raw):
        return _refused_path("The path must be ASCII, with well-formed percent-escapes.")
    if raw in ("", "/"):
        return ()
    if not raw.startswith("/"):
        return _refused_path("The path must start with a slash.")
    segments = []
    for part in raw[1:].split("/"):
        try:
            segment = unquote(part, errors="strict")
        except UnicodeDecodeError:
            return _refused_path("A percent-escape in the path is not UTF-8.")
        if segment in ("", ".", ".."):
            return _refused_path("The path must not have empty, '.' or '..' segments.")
        if "/" in segment or "\\" in segment or _CONTROL.search(segment):
            return _refused_path("The path must not hide slashes, backslashes or control codes.")
        segments.append(segment.lower())
    return tuple(segments)


def _below(prefix: str, raw_path: str) -> tuple[str, tuple[str, ...]] | Refused:
    """The raw path below `prefix` as sent, and its decoded segments; or why not.

    The prefix must be there as it is written: an escaped one is not it.
    """
    if raw_path != prefix and not raw_path.startswith(prefix + "/"):
        return Refused(404, "Not a GitHub proxy path.", "not_found")
    path = raw_path[len(prefix) :]
    segments = decoded_segments(path)
    if isinstance(segments, Refused):
        return segments
    return path, segments


def api_target(method: str, raw_path: str, raw_query: str) -> Target | Refused:
    """`ANY /github/api/{path}?{query}`, forwarded to GITHUB_API_BASE_URL/{path}?{query}."""
    below = _below(API_PREFIX, raw_path)
    if isinstance(below, Refused):
        return below
    path, segments = below
    if not _RAW_QUERY.fullmatch(raw_query):
        return _refused_path("The query must be ASCII, with well-formed percent-escapes.")
    repository = None
    if len(segments) >= 3 and segments[0] == "repos":
        repository = canonical_repository(segments[1], segments[2])
        if repository is None:
            return _refused_path("/repos/{owner}/{name} does not name a GitHub repository.")
    write = method not in READ_METHODS
    return Target(
        route=Route.API,
        method=method,
        path=path or "/",
        query=raw_query,
        segments=segments,
        repository=repository,
        write=write,
        audited=write,
    )


_GIT_USAGE = (
    "ghvault's git proxy speaks git's smart HTTP protocol only: "
    "/github/git/{owner}/{name}.git/info/refs?service=..., /git-upload-pack, /git-receive-pack."
)


def git_target(method: str, raw_path: str, raw_query: str) -> Target | Refused:
    """`/github/git/{owner}/{name}.git/...`, forwarded to GITHUB_GIT_BASE_URL/{owner}/{name}.git/...

    git sends the query `service=...` on ref discovery, and nothing else.
    """
    below = _below(GIT_PREFIX, raw_path)
    if isinstance(below, Refused):
        return below
    _, segments = below
    if len(segments) < 3:
        return Refused(404, _GIT_USAGE, "not_found")
    owner, name, rest = segments[0], segments[1].removesuffix(".git"), segments[2:]
    repository = canonical_repository(owner, name)
    if repository is None:
        return Refused(404, "The path does not name a GitHub repository.", "not_found")
    if rest == ("info", "refs"):
        service = raw_query.removeprefix("service=")
        if method not in READ_METHODS:
            return Refused(405, "Ref discovery is a GET.", "bad_request")
        if not raw_query.startswith("service=") or service not in GIT_SERVICES:
            return Refused(404, _GIT_USAGE, "not_found")
        query, audited = raw_query, False
    elif len(rest) == 1 and rest[0] in GIT_SERVICES:
        service = rest[0]
        if method != "POST":
            return Refused(405, f"{service} is a POST.", "bad_request")
        query, audited = "", service == "git-receive-pack"
    else:
        return Refused(404, _GIT_USAGE, "not_found")
    # Rebuilt from the checked segments: their characters need no escaping.
    return Target(
        route=Route.GIT,
        method=method,
        path=f"/{repository}.git/{'/'.join(rest)}",
        query=query,
        segments=segments,
        repository=repository,
        write=service == "git-receive-pack",
        audited=audited,
    )


def _mints_credential(segments: tuple[str, ...]) -> bool:
    """A write that makes a credential outliving the capability: an SSH, GPG or signing
    key of the user, a deploy key of a repository, a (legacy) authorization."""
    if segments[:2] in (("user", "keys"), ("user", "gpg_keys"), ("user", "ssh_signing_keys")):
        return True
    if segments[:1] == ("authorizations",):
        return True
    return len(segments) >= 4 and segments[0] == "repos" and segments[3] == "keys"


def refusal(capability: Capability, target: Target) -> Refused | None:
    """Why `capability` does not allow `target`, or None when it does."""
    if target.write and capability.access is not CapabilityAccess.WRITE:
        what = "git fetch and clone" if target.route is Route.GIT else "GET and HEAD"
        return Refused(403, f"This capability is READ: it allows {what} only.", "forbidden")
    if target.write and target.route is Route.API and _mints_credential(target.segments):
        return Refused(
            403,
            "Keys and authorizations cannot be created through the proxy: "
            "they would outlive the capability.",
            "forbidden",
        )
    if not capability.repositories:
        return None
    if target.repository is not None:
        if target.repository in capability.repositories:
            return None
        return Refused(
            403, f"This capability does not cover the repository {target.repository}.", "forbidden"
        )
    if target.method in READ_METHODS and target.segments in ALWAYS_READABLE:
        return None
    return Refused(
        403,
        "This capability covers /repos/{owner}/{name}/... of its repositories only "
        "(and GET /user, GET /rate_limit).",
        "forbidden",
    )
