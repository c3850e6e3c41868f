"""Which headers cross the proxy, and GitHub's own URLs pointed back at ghvault.

Hop-by-hop headers (RFC 9110 7.6.1, and whatever `Connection` names) belong
to one connection and never cross. Towards GitHub the worker's credentials,
cookies and addresses stay behind; towards the worker GitHub's cookies do.
Everything else crosses untouched, rate-limit headers included.

GitHub's answers name its API by absolute URL: pagination (`Link`),
redirects (`Location`) and the URL fields of JSON bodies (`"url"`,
`"comments_url"`...), which client libraries such as PyGithub call next. A
worker following one would take its capability to GitHub, which knows
nothing of it; so those pointing below the upstream base are rewritten to
the proxy. Bodies are otherwise relayed byte for byte: a field is only
rewritten where the JSON structure has a key ending in "url", never inside
a string (where its quotes would be escaped).
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


# The longest key taken for a URL field, and the blanks JSON may put around ":".
_KEY_CHARS = 64
_BLANKS = 8


class JsonUrlFields:
    """Rewrites URL fields of a JSON body fed in chunks, holding back only a match's length."""

    def __init__(self, back: BackToProxy) -> None:
        blanks = rb"[ \t\r\n]{0,%d}" % _BLANKS
        self._field = re.compile(
            rb'(?<!\\)("[a-z_]{0,%d}url"' % _KEY_CHARS
            + blanks
            + b":"
            + blanks
            + b'")'
            + re.escape(back.upstream.encode())
            + b'(?=[/?"])'
        )
        self._proxy = back.proxy.encode()
        # Anything a match, and the character its lookahead reads, can span.
        self._span = 1 + _KEY_CHARS + 4 + 2 * _BLANKS + 1 + len(back.upstream) + 1
        # The held bytes, after one already sent that the lookbehind still reads.
        self._held = b""
        self._context = 0

    def feed(self, chunk: bytes) -> bytes:
        text = self._held + chunk
        # A match starting before `safe` lies wholly in `text`, lookahead included.
        safe = len(text) - self._span + 1
        if safe <= self._context:
            self._held = text
            return b""
        out, done = self._rewrite(text, before=safe)
        end = max(done, safe)
        self._held, self._context = text[end - 1 :], 1
        return out + text[done:end]

    def end(self) -> bytes:
        """What is still held, rewritten: the body has ended."""
        out, done = self._rewrite(self._held, before=len(self._held))
        rest = self._held[done:]
        self._held, self._context = b"", 0
        return out + rest

    def _rewrite(self, text: bytes, *, before: int) -> tuple[bytes, int]:
        """The matches starting before `before` replaced, and where the last one ended."""
        out, done = [], self._context
        for match in self._field.finditer(text, self._context):
            if match.start() >= before:
                break
            out += [text[done : match.start()], match[1], self._proxy]
            done = match.end()
        return b"".join(out), done
