"""Event-loop cost of hostile GraphQL documents, one request at a time.

Run from the project root::

    .venv/bin/python -m bench.hostile [--runs 15] [--profile production|development] [--only TEXT]

Each case is a document an attacker can send within the configured limits
(2,000 tokens, 64 KiB, depth 12, 30 aliases), built to make graphql-core
work hard: repeated overlapping fields, fragments compared pairwise,
directive floods, and whitespace variants that miss the parser and
validation caches (every request of every case is a new variant, so nothing
is served from a cache). The last cases are the worst documents that still
pass ghvault's own document budget (server/graphql/budget.py), so they are
parsed, validated and run.

The app runs in this process (aiohttp's test server, pooled SQLite in a
temporary directory, logging at WARNING). A middleware measures the main
thread's CPU time inside the handler: requests go one at a time, so that is
the time the event loop was busy with the request and could serve nobody
else. Medians and maxima over `--runs` requests per case are printed, with
the status and first error of the last answer.
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.config import GraphQLLimits, Settings
from server.domain.enums import Role
from server.http.app import create_app
from server.http.server import settle_start_up_objects
from server.storage import engines
from server.storage.sqlite_pool import PooledSQLiteEngine
from tests.helpers import base_env, bearer, migrate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Case:
    name: str
    build: Callable[[], str]  # a new whitespace variant of the document each call
    anonymous: bool = False


_variants = itertools.count()


def _variant(document: str) -> str:
    """The same document with insignificant whitespace never sent before: a cache miss."""
    return document + " " * next(_variants) + "\n"


def _fill(prefix: str, unit: str, suffix: str, unit_tokens: int, budget: int) -> str:
    """As many `unit`s as fit in `budget` tokens (the prefix and suffix take ~10)."""
    return prefix + unit * ((budget - 10) // unit_tokens) + suffix


def cases(limits: GraphQLLimits) -> list[Case]:
    tokens = limits.max_tokens
    repeats = getattr(limits, "max_field_repeats", 4)
    selections = getattr(limits, "max_selections", 200)
    cost = getattr(limits, "max_cost", 500)
    directives = getattr(limits, "max_directives", 20)

    repeated_id = _fill("{ viewer { ", "id ", "} }", 1, tokens)
    nested = _fill("{ viewer { ", "githubToken(appType: STANDARD) { state } ", "} }", 9, tokens)
    roots = _fill("{ ", "viewer { id } ", "}", 4, tokens)
    fragment_count = (tokens - 10) // 9
    fragments = (
        "{ viewer { "
        + " ".join(f"...F{i}" for i in range(fragment_count))
        + " } } "
        + " ".join(f"fragment F{i} on Viewer {{ id }}" for i in range(fragment_count))
    )
    # Exponential for graphql-core before the budget: 14 levels are already slow.
    chain = 14
    fragment_chain = (
        "{ viewer { ...C0 } } "
        + " ".join(
            f"fragment C{i} on Viewer {{ id ...C{i + 1} ...C{i + 1} }}" for i in range(chain)
        )
        + f" fragment C{chain} on Viewer {{ id }}"
    )
    include_flood = _fill("{ viewer { id ", "@include(if: true) ", "} }", 6, tokens)
    unknown_flood = _fill("{ __typename ", "@aa ", "}", 2, tokens)

    # Within the budget: every response name repeated as often as allowed,
    # nested where the schema lets fields nest, using up the selections.
    status_fields = [
        "userId",
        "appType",
        "state",
        "needsReconnect",
        "githubUserId",
        "githubLogin",
        "accessTokenExpiresAt",
        "refreshTokenExpiresAt",
        "revokedAt",
        "revocationReason",
        "connectedAt",
        "updatedAt",
        "lastUsedAt",
    ]
    inner = max(1, (selections - repeats - repeats * repeats) // (repeats * repeats) // repeats)
    token_fields = " ".join(name for name in status_fields[:inner] for _ in range(repeats))
    token_block = f"githubToken(appType: STANDARD) {{ {token_fields} }} "
    worst_nested = "{ " + f"viewer {{ {token_block * repeats}}} " * repeats + "}"
    flat_fields = " ".join(name for name in status_fields for _ in range(repeats))
    worst_flat = "{ viewer { " + f"githubToken(appType: STANDARD) {{ {flat_fields} }} " + "} }"
    spreads = getattr(limits, "max_fragment_spreads", 24)
    spread_count = min(spreads, selections // 3, cost // 2, len(status_fields) * repeats)
    worst_fragments = (
        "{ viewer { githubToken(appType: STANDARD) { "
        + " ".join(f"...W{i}" for i in range(spread_count))
        + " } } } "
        + " ".join(
            f"fragment W{i} on GithubTokenStatus {{ {status_fields[i % len(status_fields)]} }}"
            for i in range(spread_count)
        )
    )
    worst_directives = (
        "{ viewer { " + " ".join(f"a{i}: id @include(if: true)" for i in range(directives)) + " } }"
    )

    def fixed(document: str) -> Callable[[], str]:
        return lambda: _variant(document)

    return [
        Case("anonymous, repeated field", fixed(repeated_id), anonymous=True),
        Case("repeated field (id x ~2000)", fixed(repeated_id)),
        Case("repeated object field with selection", fixed(nested)),
        Case("repeated root field", fixed(roots)),
        Case("many fragments spread in one set", fixed(fragments)),
        Case("fragments spreading each other twice", fixed(fragment_chain)),
        Case("directive overloading (@include)", fixed(include_flood)),
        Case("unknown directive flood (@aa)", fixed(unknown_flood)),
        Case("within budget: repeats, nested", fixed(worst_nested)),
        Case("within budget: repeats, flat", fixed(worst_flat)),
        Case("within budget: fragments", fixed(worst_fragments)),
        Case("within budget: directives", fixed(worst_directives)),
        Case("baseline: { viewer { id } }", fixed("{ viewer { id } }")),
    ]


class HandlerClock:
    """Main-thread CPU time spent inside the handler of each request."""

    def __init__(self) -> None:
        self.last = 0.0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.thread_time()
        try:
            return await handler(request)
        finally:
            self.last = time.thread_time() - started


@dataclass
class Result:
    case: str
    median_ms: float
    max_ms: float
    status: int
    outcome: str


def _outcome(status: int, body: Any) -> str:
    if isinstance(body, dict) and body.get("errors"):
        return str(body["errors"][0].get("message", ""))[:70]
    if isinstance(body, dict) and body.get("data") is not None:
        return "answered"
    return str(body)[:70]


async def measure(settings: Settings, runs: int, only: str | None) -> list[Result]:
    directory = Path(tempfile.mkdtemp(prefix="ghvault-hostile-"))
    path = directory / "ghvault.sqlite"
    migrate(f"sqlite:///{path}")
    async with engines.serving(PooledSQLiteEngine(path=str(path))) as engine:
        return await _measure_on(engine, settings, runs, only)


async def _measure_on(
    engine: PooledSQLiteEngine, settings: Settings, runs: int, only: str | None
) -> list[Result]:
    clock = HandlerClock()
    app = create_app(settings, engine=engine)
    app.middlewares.append(clock.middleware)
    client = TestClient(TestServer(app))
    await client.start_server()
    settle_start_up_objects()  # as `ghvault serve` does once it listens
    admin = bearer("root", Role.ADMIN)
    results = []
    try:
        for case in cases(settings.graphql_limits):
            if only and only not in case.name:
                continue
            timings, status, body = [], 0, None
            for n in range(runs + 1):
                headers = {} if case.anonymous else {"Authorization": admin}
                response = await client.post(
                    "/graphql", json={"query": case.build()}, headers=headers
                )
                status = response.status
                body = await response.json(content_type=None)
                if n:  # the first request of each case warms up
                    timings.append(clock.last * 1000)
            result = Result(
                case.name, statistics.median(timings), max(timings), status, _outcome(status, body)
            )
            results.append(result)
            print(_row(result), file=sys.stderr, flush=True)  # progress: slow cases take minutes
    finally:
        await client.close()
    return results


def report(results: Sequence[Result], runs: int, profile: str) -> str:
    lines = [
        f"hostile documents, {profile} profile, {runs} requests per case, "
        "main-thread CPU ms inside the handler",
        "",
        "| case | median ms | max ms | status | outcome |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    lines.extend(_row(result) for result in results)
    return "\n".join(lines)


def _row(result: Result) -> str:
    outcome = result.outcome.replace("|", "/")
    return (
        f"| {result.case} | {result.median_ms:.1f} | {result.max_ms:.1f} "
        f"| {result.status} | {outcome} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--profile", choices=("production", "development"), default="production")
    parser.add_argument("--only", help="run the cases whose name contains this text")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.from_env(base_env(GHVAULT_ENV=options.profile))
    results = asyncio.run(measure(settings, options.runs, options.only))
    print(report(results, options.runs, options.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
