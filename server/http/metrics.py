"""Prometheus metrics: what ghvault counts, and GET /metrics.

Label values come from fixed sets (root fields of the schema, error codes, GitHub
endpoints, HTTP statuses, token states): never an id, a login, an operation name a
client chose, or anything secret.

With several processes (PROMETHEUS_MULTIPROC_DIR set before start, the directory
emptied first; `serve --workers N` sees to that in worker_metrics.py) prometheus-client
keeps each process's numbers in files there, and any process's /metrics adds them all
up. The token counts are a fact of the database, not of a process, so the process
answering the scrape reads them (cached briefly) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from graphql import DocumentNode, FieldNode, GraphQLError, get_operation_ast
from piccolo.engine.base import Engine
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from server.clock import Clock
from server.domain.enums import AppType, TokenState
from server.domain.status import count_by_state
from server.domain.sweep import SWEEP_OUTCOMES, SweepReport
from server.graphql.observers import OperationOutcome
from server.storage import engines

logger = logging.getLogger("ghvault.metrics")

TOKEN_COUNTS_TTL_SECONDS = 15.0
POOL_SAMPLE_SECONDS = 1.0

REFRESH_OUTCOMES = ("refreshed", "bad_refresh_token", "rejected", "unavailable")
WEBHOOK_RESULTS = ("processed", "duplicate", "ignored", "bad_signature", "malformed", "too_large")
PROXY_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_ERROR_CODE = re.compile(r"[A-Z][A-Z_]{0,39}")


class Metrics:
    """The metrics of one process; `multiprocess_dir` shares them with its siblings."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        # In multiprocess mode the values live in files and the collector reads them all;
        # registering the metrics themselves as well would count this process twice.
        owner: CollectorRegistry | None = self.registry
        if multiprocess_dir is not None:
            multiprocess.MultiProcessCollector(self.registry, path=str(multiprocess_dir))
            owner = None
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.graphql = Histogram(
            "ghvault_graphql_operation_duration_seconds",
            "GraphQL operations by root field and outcome (ok or the error code); "
            "_count is the number of operations.",
            ["operation", "outcome"],
            registry=owner,
        )
        self.github = Histogram(
            "ghvault_github_request_duration_seconds",
            "Requests to GitHub by endpoint and outcome (HTTP status, timeout or unreachable).",
            ["endpoint", "outcome"],
            registry=owner,
        )
        self.refreshes = Counter(
            "ghvault_token_refreshes",
            "Refreshes of access tokens at GitHub, by outcome.",
            ["outcome"],
            registry=owner,
        )
        self.webhooks = Counter(
            "ghvault_webhook_deliveries",
            "GitHub webhook deliveries, by result.",
            ["result"],
            registry=owner,
        )
        self.sweeps = Counter(
            "ghvault_sweep_tokens",
            "Due tokens the in-process refresh sweep handled, by outcome.",
            ["outcome"],
            registry=owner,
        )
        self.github_proxy = Histogram(
            "ghvault_github_proxy_request_duration_seconds",
            "Requests through the GitHub proxy by route (api, git), method and outcome, until "
            "the last byte of the answer; _count is the number of requests.",
            ["route", "method", "outcome"],
            registry=owner,
        )
        self.github_proxy_bytes = Counter(
            "ghvault_github_proxy_body_bytes",
            "Body bytes the GitHub proxy relayed, by route and direction (to_github, to_worker).",
            ["route", "direction"],
            registry=owner,
        )
        self.pool_in_use = Gauge(
            "ghvault_database_connections_in_use",
            "Database connections lent out of the pool (sampled each second).",
            registry=owner,
            multiprocess_mode="livesum",
        )
        # Known outcomes start at zero, so rates and alerts work before the first event.
        for outcome in REFRESH_OUTCOMES:
            self.refreshes.labels(outcome)
        for result in WEBHOOK_RESULTS:
            self.webhooks.labels(result)
        for outcome in SWEEP_OUTCOMES:
            self.sweeps.labels(outcome)
        self.tokens = TokenCounts()
        self.registry.register(self.tokens)

    # GitHubObserver (server.github): one call per request and per refresh.
    def request_done(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.github.labels(endpoint, outcome).observe(seconds)

    def refresh_done(self, outcome: str) -> None:
        self.refreshes.labels(outcome).inc()

    def sweep_done(self, report: SweepReport) -> None:
        for outcome in SWEEP_OUTCOMES:
            self.sweeps.labels(outcome).inc(getattr(report, outcome))

    def webhook_done(self, result: str) -> None:
        self.webhooks.labels(result).inc()

    def proxy_done(
        self, route: str, method: str, outcome: str, seconds: float, sent: int, received: int
    ) -> None:
        """One proxied request; `outcome` is one of relay.py's fixed words."""
        method = method if method in PROXY_METHODS else "OTHER"
        self.github_proxy.labels(route, method, outcome).observe(seconds)
        if sent:
            self.github_proxy_bytes.labels(route, "to_github").inc(sent)
        if received:
            self.github_proxy_bytes.labels(route, "to_worker").inc(received)

    # OperationObserver (server.graphql.observers): one call per GraphQL operation.
    def operation_done(self, outcome: OperationOutcome) -> None:
        if outcome.document is None:
            operation, result = "invalid", "INVALID_QUERY"
        else:
            operation = operation_label(outcome.document, outcome.operation_name)
            result = outcome_label(outcome.errors)
        self.graphql.labels(operation, result).observe(outcome.seconds)


class TokenCounts(Collector):
    """`ghvault_tokens{app_type, state}`, read from the database off the scrape's path.

    Counting is a scan of the token table (seconds at a million rows on SQLite), so a
    scrape starts a read when one is due and answers with the last counts; only the very
    first scrape waits. A read is due 15 s after the last, or ten times as long as that
    one took, so a large table is not scanned most of the time.
    """

    def __init__(self) -> None:
        self._counts: Mapping[tuple[AppType, TokenState], int] | None = None
        self._next_read = 0.0
        self._reading: asyncio.Task[None] | None = None

    async def refresh(self, clock: Clock) -> None:
        if self._reading is None and time.monotonic() >= self._next_read:
            self._reading = asyncio.get_running_loop().create_task(self._read(clock))
        if self._counts is None and self._reading is not None:
            # Shielded: a scrape that gives up must not cancel the read for the next one.
            await asyncio.shield(self._reading)

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading

    async def _read(self, clock: Clock) -> None:
        started = time.monotonic()
        try:
            self._counts = await count_by_state(clock())
        except Exception as exc:  # noqa: BLE001 -- the other metrics still answer
            logger.warning("token counts unavailable: %s", type(exc).__name__)
        finally:
            took = time.monotonic() - started
            self._next_read = time.monotonic() + max(TOKEN_COUNTS_TTL_SECONDS, 10 * took)
            self._reading = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._counts is None:
            return
        family = GaugeMetricFamily(
            "ghvault_tokens",
            "Stored tokens by app type and state (read in the background, at most every 15 s).",
            labels=["app_type", "state"],
        )
        for (app_type, state), count in sorted(self._counts.items()):
            family.add_metric([app_type.value, state.value], count)
        yield family


def operation_label(document: DocumentNode, operation_name: str | None) -> str:
    """The root field of a validated operation (a field of the schema, whatever the
    client's text), or "multiple" for several."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return "invalid"
    selections = operation.selection_set.selections
    fields = [selection for selection in selections if isinstance(selection, FieldNode)]
    names = {field.name.value for field in fields}
    if len(fields) == len(selections) and len(names) == 1:
        return names.pop()
    return "multiple"


def outcome_label(errors: Sequence[GraphQLError]) -> str:
    """ "ok", or the code of the first error (codes are ghvault's own words)."""
    if not errors:
        return "ok"
    code = (errors[0].extensions or {}).get("code")
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else "ERROR"


def metrics_handler(
    metrics: Metrics, *, token: str | None, clock: Clock, engine: Engine[Any]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle_metrics(request: web.Request) -> web.Response:
        if token is not None and not _bearer_matches(request.headers.get("Authorization"), token):
            return web.json_response(
                {"error": "send the metrics token: Authorization: Bearer <METRICS_TOKEN>"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        await metrics.tokens.refresh(clock)
        metrics.pool_in_use.set(engines.connections_in_use(engine))
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle_metrics


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


def metrics_context(
    metrics: Metrics, engine: Engine[Any]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context sampling the pool each second (so every process's gauge is fresh)
    and ending a token count still running at shutdown."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        async def sample() -> None:
            while True:
                metrics.pool_in_use.set(engines.connections_in_use(engine))
                await asyncio.sleep(POOL_SAMPLE_SECONDS)

        sampler = asyncio.get_running_loop().create_task(sample())
        yield
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await metrics.tokens.stop()

    return run
