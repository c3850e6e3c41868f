"""CORS for /graphql: a frontend on another origin may call the API, named origins only.

Exact origins from CORS_ALLOWED_ORIGINS, never a wildcard. Callers authenticate with a
bearer header, not cookies, so no credentials mode is offered. A refused origin gets no
CORS header at all, and its browser keeps the answer from the page.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

CORS_PATHS = frozenset({"/graphql"})
ALLOWED_METHODS = ("POST",)
ALLOWED_HEADERS = ("Authorization", "Content-Type")
EXPOSED_HEADERS = ("X-Request-Id",)
MAX_AGE_SECONDS = 600

_ALLOWED_HEADER_NAMES = frozenset(name.lower() for name in ALLOWED_HEADERS)


def cors_middleware(allowed_origins: Iterable[str]) -> Middleware:
    allowed = frozenset(allowed_origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in CORS_PATHS:
            return await handler(request)
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return _preflight(request, origin if origin in allowed else None)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _mark(exc.headers, origin if origin in allowed else None)
            raise
        _mark(response.headers, origin if origin in allowed else None)
        return response

    return cors


def _preflight(request: web.Request, origin: str | None) -> web.Response:
    """Answer the browser's OPTIONS question; any refusal carries no CORS header."""
    vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    if origin is None:
        return _refuse("origin not allowed", vary)
    method = request.headers["Access-Control-Request-Method"].strip()
    if method not in ALLOWED_METHODS:
        return _refuse(f"cross-origin requests may use only {', '.join(ALLOWED_METHODS)}", vary)
    requested = request.headers.get("Access-Control-Request-Headers", "")
    names = {name.strip().lower() for name in requested.split(",") if name.strip()}
    if not names <= _ALLOWED_HEADER_NAMES:
        return _refuse(
            f"cross-origin requests may send only the headers {', '.join(ALLOWED_HEADERS)}",
            vary,
        )
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
            "Vary": vary,
        },
    )


def _refuse(reason: str, vary: str) -> web.Response:
    return web.json_response({"error": reason}, status=403, headers={"Vary": vary})


def _mark(headers: CIMultiDict[str], origin: str | None) -> None:
    """The answer depends on Origin, for every cache; only an allowed origin may read it."""
    headers.add("Vary", "Origin")
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
