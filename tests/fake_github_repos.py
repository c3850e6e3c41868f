"""The REST endpoints of the fake GitHub that a client library uses through the proxy.

Repositories and their issues, paginated with `Link` headers as GitHub
paginates (absolute URLs below the fake's own base), rate-limit headers on
every answer, and a session cookie (which the proxy must not pass on). Every
request is recorded (`seen`) with the headers it arrived with, so tests can
tell what reached "GitHub".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDictProxy

RATE_LIMIT = 5000


@dataclass
class _Repository:
    id: int
    owner: str
    name: str
    issues: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Seen:
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body_bytes: int


class FakeRepositories:
    """`GET /repos/{owner}/{name}`, its issues (list and create) and `GET /rate_limit`.

    ``user_of``: the login a token belongs to, or None (from the fake's grants).
    ``redirect_to``: when set, every endpoint here answers 302 to that URL.
    """

    def __init__(self, user_of: Callable[[str], str | None]) -> None:
        self._lock = threading.Lock()
        self._user_of = user_of
        self._repositories: dict[str, _Repository] = {}
        self._used: dict[str, int] = {}
        self.seen: list[Seen] = []
        self.redirect_to: str | None = None

    def add(self, owner: str, name: str) -> None:
        with self._lock:
            key = f"{owner}/{name}".lower()
            self._repositories[key] = _Repository(len(self._repositories) + 1, owner, name)

    def issue_titles(self, owner: str, name: str) -> list[str]:
        with self._lock:
            return [
                issue["title"] for issue in self._repositories[f"{owner}/{name}".lower()].issues
            ]

    def register(self, app: web.Application) -> None:
        app.router.add_get("/rate_limit", self._rate_limit)
        app.router.add_get("/repos/{owner}/{name}", self._repository)
        app.router.add_get("/repos/{owner}/{name}/issues", self._list_issues)
        # Where GitHub's own pagination links point.
        app.router.add_get("/repositories/{id}/issues", self._list_issues)
        app.router.add_post("/repos/{owner}/{name}/issues", self._create_issue)

    # Handlers

    async def _arrive(self, request: web.Request) -> tuple[str, web.Response | None]:
        """Record the request and check its token: (login, None) or ("", the refusal)."""
        body = await request.read()
        with self._lock:
            self.seen.append(Seen(request.method, request.path_qs, request.headers, len(body)))
        if self.redirect_to is not None:
            return "", web.Response(status=302, headers={hdrs.LOCATION: self.redirect_to})
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        login = self._user_of(token.strip()) if scheme.lower() in ("bearer", "token") else None
        if login is None:
            return "", _error(401, "Bad credentials")
        return login, None

    def _headers(self, token_user: str) -> dict[str, str]:
        with self._lock:
            used = self._used[token_user] = self._used.get(token_user, 0) + 1
        return {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(RATE_LIMIT - used),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Resource": "core",
            "Set-Cookie": "_gh_sess=fake-session; Path=/; HttpOnly",
        }

    async def _arrive_at_repository(
        self, request: web.Request
    ) -> tuple[str, _Repository] | web.Response:
        """The login and the repository of a request to one, or the refusal."""
        login, refused = await self._arrive(request)
        if refused is not None:
            return refused
        repository = self._find(request)
        if repository is None:
            return _error(404, "Not Found")
        return login, repository

    def _find(self, request: web.Request) -> _Repository | None:
        with self._lock:
            if "id" in request.match_info:
                return next(
                    (
                        r
                        for r in self._repositories.values()
                        if str(r.id) == request.match_info["id"]
                    ),
                    None,
                )
            key = f"{request.match_info['owner']}/{request.match_info['name']}".lower()
            return self._repositories.get(key)

    async def _rate_limit(self, request: web.Request) -> web.Response:
        login, refused = await self._arrive(request)
        if refused is not None:
            return refused
        core = {"limit": RATE_LIMIT, "remaining": RATE_LIMIT, "reset": 1_900_000_000, "used": 0}
        return web.json_response(
            {"resources": {"core": core}, "rate": core}, headers=self._headers(login)
        )

    async def _repository(self, request: web.Request) -> web.Response:
        arrived = await self._arrive_at_repository(request)
        if isinstance(arrived, web.Response):
            return arrived
        login, repository = arrived
        return web.json_response(
            _repository_json(repository, _base(request)), headers=self._headers(login)
        )

    async def _list_issues(self, request: web.Request) -> web.Response:
        arrived = await self._arrive_at_repository(request)
        if isinstance(arrived, web.Response):
            return arrived
        login, repository = arrived
        page = int(request.query.get("page", "1"))
        per_page = int(request.query.get("per_page", "30"))
        with self._lock:
            issues = list(repository.issues)
        headers = self._headers(login)
        last = max(1, -(-len(issues) // per_page))
        if page < last:
            url = f"{_base(request)}/repositories/{repository.id}/issues"
            headers["Link"] = (
                f'<{url}?per_page={per_page}&page={page + 1}>; rel="next", '
                f'<{url}?per_page={per_page}&page={last}>; rel="last"'
            )
        return web.json_response(issues[(page - 1) * per_page : page * per_page], headers=headers)

    async def _create_issue(self, request: web.Request) -> web.Response:
        arrived = await self._arrive_at_repository(request)
        if isinstance(arrived, web.Response):
            return arrived
        login, repository = arrived
        body = await request.json()
        full_name = f"{repository.owner}/{repository.name}"
        with self._lock:
            number = len(repository.issues) + 1
            issue = {
                "id": 1000 + number,
                "number": number,
                "title": body["title"],
                "body": body.get("body"),
                "state": "open",
                "user": {"login": login, "id": 1},
                "url": f"{_base(request)}/repos/{full_name}/issues/{number}",
            }
            repository.issues.append(issue)
        return web.json_response(issue, status=201, headers=self._headers(login))


def _base(request: web.Request) -> str:
    """The fake's own base URL, as GitHub writes https://api.github.com into its answers."""
    return f"{request.scheme}://{request.host}"


def _repository_json(repository: _Repository, base: str) -> dict[str, Any]:
    full_name = f"{repository.owner}/{repository.name}"
    return {
        "id": repository.id,
        "name": repository.name,
        "full_name": full_name,
        "private": True,
        "owner": {"login": repository.owner, "id": 1, "type": "User"},
        "url": f"{base}/repos/{full_name}",
        "default_branch": "main",
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"message": message, "documentation_url": "https://docs.github.com/rest"}, status=status
    )
