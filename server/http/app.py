"""create_app(settings) -> the aiohttp Application. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from piccolo.engine.base import Engine
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from server.clock import Clock, utc_now
from server.config import Settings
from server.domain import rejection, sweep
from server.domain.changes import TokenChanges
from server.domain.enums import AppType
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.github import GitHubClient, new_client_session
from server.github_proxy.relay import GitHubProxy, add_github_proxy
from server.graphql.schema import create_schema
from server.http import connections
from server.http.appkeys import (
    CLIENT_ADDRESS,
    CLOCK,
    ENGINE,
    GITHUB,
    JWKS,
    KNOWN_USERS,
    METRICS,
    OPEN_SOCKETS,
    REFRESH_LOCKS,
    REJECTION_REPORTS,
    REQUEST_ID,
    SETTINGS,
    TOKEN_CHANGES,
    VERIFIED_TOKENS,
)
from server.http.cors import cors_middleware
from server.http.forwarded import client_address
from server.http.graphiql import add_graphiql_routes
from server.http.graphql_view import GhvaultGraphQLView
from server.http.metrics import Metrics, metrics_context, metrics_handler
from server.http.request_context import REQUEST_ID_HEADER, request_scope
from server.http.routes import github_webhook
from server.jwks import JwksKeys
from server.jwt_cache import VerifiedTokens
from server.storage import engines
from server.storage.migration_state import schema_problem, serving_checked
from server.storage.token_changes import change_source

logger = logging.getLogger("ghvault.app")

READINESS_TIMEOUT_SECONDS = 1.0
# A socket that has not sent connection_init by then is closed (4408).
CONNECTION_INIT_TIMEOUT = timedelta(seconds=10)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request gets an id: in the response header, the logs and masked errors."""
    request_id = uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        with request_scope(request_id):
            response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def busy_connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A connection whose request is being handled is never closed to make room for another."""
    connections.mark_busy(request)
    return await handler(request)


@web.middleware
async def client_address_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record who sent the request (X-Forwarded-For counts only from TRUSTED_PROXIES)."""
    client = client_address(
        request.remote,
        request.headers.getall("X-Forwarded-For", []),
        request.app[SETTINGS].trusted_proxies,
    )
    if client is not None:
        request[CLIENT_ADDRESS] = client
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and holds exactly this release's migrations."""
    try:
        problem = await engines.answer_within(
            schema_problem(request.app[ENGINE]), within=READINESS_TIMEOUT_SECONDS
        )
    except Exception as exc:  # noqa: BLE001 -- any failure means "not ready"
        logger.warning("readiness check failed: %s", type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": False}, status=503)
    if problem is not None:
        logger.warning("readiness check failed: %s", problem)
        return web.json_response(
            {"status": "unavailable", "database": True, "migrations": False}, status=503
        )
    # Subscribers on this process go deaf while a LISTEN connection is lost.
    source = request.app[TOKEN_CHANGES].source
    notifications = "lost" if source and not source.hearing else source.mode if source else "off"
    status = "unavailable" if notifications == "lost" else "ready"
    return web.json_response(
        {"status": status, "database": True, "migrations": True, "notifications": notifications},
        status=503 if notifications == "lost" else 200,
    )


async def _database_context(app: web.Application) -> AsyncIterator[None]:
    async with serving_checked(app[ENGINE]):
        yield


async def _github_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with new_client_session(settings.github_timeout_seconds) as session:
        app[GITHUB] = GitHubClient(
            session,
            oauth_base_url=settings.github_oauth_base_url,
            api_base_url=settings.github_api_base_url,
            observer=app[METRICS],
        )
        yield


async def _token_changes_context(app: web.Application) -> AsyncIterator[None]:
    """What status subscriptions hear: NOTIFY on PostgreSQL, polling on SQLite."""
    changes = app[TOKEN_CHANGES]
    source = await change_source(
        app[ENGINE], changes.changed, listen_dsn=app[SETTINGS].database.listen_dsn
    )
    changes.source = source
    await source.start()
    yield
    await source.stop()


async def _sweeper_context(app: web.Application) -> AsyncIterator[None]:
    """REFRESH_SWEEP_INTERVAL_SECONDS: refresh due tokens in the background."""
    settings = app[SETTINGS]
    interval = settings.refresh_sweep_interval_seconds
    if interval is None:
        yield
        return

    async def run(stop: asyncio.Event) -> sweep.SweepReport:
        github_for = {
            app_type: GitHubAccess(client=app[GITHUB], app=settings.github_apps.get(app_type))
            for app_type in AppType
        }
        report = await sweep.sweep(
            now=app[CLOCK](),
            keyring=settings.keyring,
            github_for=github_for,
            locks=app[REFRESH_LOCKS],
            stop=stop,
        )
        app[METRICS].sweep_done(report)
        return report

    stop = asyncio.Event()
    sweeper = asyncio.create_task(sweep.sweep_periodically(interval, run, stop))
    yield
    stop.set()
    await sweeper


def create_app(
    settings: Settings, *, clock: Clock = utc_now, engine: Engine[Any] | None = None
) -> web.Application:
    """The ghvault application.

    `clock` and `engine` are injectable for tests; an injected engine is the
    caller's to bind, start and stop.
    """
    middlewares: list[Middleware] = [
        busy_connection_middleware,
        client_address_middleware,
        request_id_middleware,
    ]
    if settings.cors_allowed_origins:
        middlewares.append(cors_middleware(settings.cors_allowed_origins))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.graphql_limits.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[KNOWN_USERS] = set()
    app[REFRESH_LOCKS] = KeyedLocks()
    app[REJECTION_REPORTS] = rejection.report_limit()
    app[METRICS] = Metrics(multiprocess_dir=settings.metrics_multiprocess_dir)
    if settings.jwt.jwks_url is not None:
        app[JWKS] = JwksKeys(settings.jwt.jwks_url)
    app[TOKEN_CHANGES] = TokenChanges()
    app[VERIFIED_TOKENS] = VerifiedTokens()
    app[OPEN_SOCKETS] = set()
    if engine is None:
        app[ENGINE] = engines.create_engine(settings.database)
        app.cleanup_ctx.append(_database_context)
    else:
        app[ENGINE] = engine
    app.cleanup_ctx.append(_github_context)
    app.cleanup_ctx.append(metrics_context(app[METRICS], app[ENGINE]))
    app.cleanup_ctx.append(_token_changes_context)
    app.cleanup_ctx.append(_sweeper_context)

    view = GhvaultGraphQLView(
        schema=create_schema(
            production=settings.is_production,
            introspection=settings.graphiql_enabled,
            limits=settings.graphql_limits,
            observers=(app[METRICS].operation_extension(),),
        ),
        graphql_ide=None,
        allow_queries_via_get=False,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=CONNECTION_INIT_TIMEOUT,
    )

    graphiql_page = add_graphiql_routes(app) if settings.graphiql_enabled else None

    async def graphql_get(request: web.Request) -> web.StreamResponse:
        # Subscriptions upgrade GET /graphql to a websocket, and a browser asking
        # for HTML gets GraphiQL's page; GraphQL requests are served over POST only.
        if view.is_websocket_request(request):
            return await view(request)
        if graphiql_page is not None and "text/html" in request.headers.get("Accept", ""):
            return await graphiql_page(request)
        raise web.HTTPMethodNotAllowed(
            "GET", ["POST"], text="GraphQL requests are served over POST only"
        )

    app.router.add_route("POST", "/graphql", view)
    app.router.add_get("/graphql", graphql_get)
    app.router.add_post("/webhooks/github", github_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_github_proxy(
        app, GitHubProxy(settings.github_proxy, api_base_url=settings.github_api_base_url)
    )
    app.router.add_get(
        "/metrics",
        metrics_handler(
            app[METRICS], token=settings.metrics_token, clock=clock, engine=app[ENGINE]
        ),
    )
    return app
