"""Which headers cross the proxy, and GitHub's own URLs pointed back at ghvault.

Hop-by-hop headers (RFC 9110 7.6.1, and whatever `Connection` names) belong
to one connection and never cross. Towards GitHub the worker's credentials,
cookies and addresses stay behind; towards the worker GitHub's cookies do.
Everything else crosses untouched, rate-limit headers included: bodies are
relayed byte for byte, compressed or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The capability travels in Authorization and is replaced by the token; Host is the
# upstream's; Expect is answered by ghvault itself; the rest says where the worker is.
_NOT_TO_GITHUB = HOP_BY_HOP | {
    "authorization",
    "cookie",
    "expect",
    "forwarded",
    "host",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
}
_NOT_TO_WORKER = HOP_BY_HOP | {"set-cookie", "set-cookie2"}

_LINK_TARGET = re.compile(r"<([^>]*)>")
_BY_ID = re.compile(r"^/repositories/[0-9]+(?=$|[/?])")

Headers = CIMultiDictProxy[str] | CIMultiDict[str]


def _crossing(headers: Headers, dropped: frozenset[str]) -> CIMultiDict[str]:
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in dropped and name.lower() not in named:
            kept.add(name, value)
    return kept


def to_github(headers: Headers) -> CIMultiDict[str]:
    """The worker's request headers GitHub may see (the token is added by the caller)."""
    return _crossing(headers, _NOT_TO_GITHUB)


@dataclass(frozen=True)
class BackToProxy:
    """Rewrites URLs below the upstream base to the same URLs below the proxy's prefix."""

    upstream: str  # e.g. https://api.github.com
    proxy: str  # e.g. https://vault.example/github/api
    # The repository the request was about: GitHub's pagination links name it by id
    # (/repositories/1296269/issues?page=2), which no capability's scope could match.
    repository: str | None = None

    def url(self, value: str) -> str:
        rest = value[len(self.upstream) :]
        if value.startswith(self.upstream) and (rest == "" or rest[0] in "/?"):
            return self.proxy + rest
        return value

    def links(self, value: str) -> str:
        """A `Link` header (pagination) with each target rewritten."""
        return _LINK_TARGET.sub(lambda match: f"<{self._link(match[1])}>", value)

    def _link(self, value: str) -> str:
        if self.repository is not None and value.startswith(self.upstream):
            rest = _BY_ID.sub(f"/repos/{self.repository}", value[len(self.upstream) :], count=1)
            value = self.upstream + rest
        return self.url(value)


def to_worker(headers: Headers, back: BackToProxy) -> CIMultiDict[str]:
    """GitHub's response headers as the worker sees them: next pages and redirects below
    GitHub's base come back through the proxy, so the capability never meets GitHub."""
    kept = _crossing(headers, _NOT_TO_WORKER)
    rewritten: CIMultiDict[str] = CIMultiDict()
    for name, value in kept.items():
        if name.lower() == "link":
            value = back.links(value)
        elif name.lower() == "location":
            value = back.url(value)
        rewritten.add(name, value)
    return rewritten
