"""GraphiQL served from the package: no CDN, and a Content-Security-Policy of 'self' only.

The page (GET /graphql) and its assets (/graphiql/...) come from static/graphiql, whose
vendor/ folder holds the pinned npm builds (refreshed by scripts/vendor-graphiql.sh).
Only files present at start-up are served, looked up by name, so no path from a URL
ever reaches the filesystem.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
ASSET_PREFIX = "/graphiql/"

# Scripts, styles and requests from this origin only; the data: sources are the
# fonts GraphiQL's stylesheet embeds and the empty favicon. GraphiQL's settings dialog
# asks to add an inline <style> (to stop the page behind it scrolling): it is refused,
# harmlessly, as this page never scrolls.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

_CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}

# Revalidated on each load (a cheap 304), so an upgrade never leaves stale scripts behind.
_ASSET_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    **_ASSET_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
}


def _assets(root: Path) -> dict[str, Path]:
    """Servable files by URL name: everything under `root` but the page itself."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "index.html"
    }


def _content_type(path: Path) -> str:
    return _CONTENT_TYPES.get(path.suffix, "text/plain; charset=utf-8")


def add_graphiql_routes(
    app: web.Application,
) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    """GET /graphiql/<name> serves the assets; returns the page's handler, for GET /graphql.

    The caller routes GET /graphql, which also carries the subscriptions' websockets.
    """
    page = STATIC_DIR / "index.html"
    assets = _assets(STATIC_DIR)

    async def graphiql_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            page, headers={**_PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8"}
        )

    async def graphiql_asset(request: web.Request) -> web.FileResponse:
        path = assets.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound
        return web.FileResponse(
            path, headers={**_ASSET_HEADERS, "Content-Type": _content_type(path)}
        )

    app.router.add_get(ASSET_PREFIX + "{name:.+}", graphiql_asset)
    return graphiql_page
