"""The lean path answers exactly as Strawberry's path does: a differential test.

Two worlds, alike in everything but the path their requests take: each has
its own app and database of the same engine, its own fake GitHub and its
own clock, both seeded the same way, and the randomness of the server and
of the fake (OAuth states, PKCE verifiers, ids, GitHub's tokens) drawn from
one seeded generator per world, so that the same requests make the same
bytes. World "strawberry" answers every request on Strawberry's path, world
"lean" takes the lean path for everything it can, a document's first
request included.

Every document goes to both, as ADMIN, USER and SERVICE, one world after
the other: the hand-written requests below (errors and refusals of every
kind, anonymous too, each sent twice in each media type a client may ask
for, so that the later ones meet a warm cache) and then schema-driven ones
from tests/graphql/test_fuzz.py (GHVAULT_FUZZ_EXAMPLES of them, the media
type varying with the principal). For each request the two worlds must
agree on the status, the headers that matter, the body, the log lines the
request caused (less their timings) and the operation metrics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from prometheus_client import generate_latest

from server.config import Settings
from server.graphql import lean as lean_module
from server.graphql.lean import LeanDocuments, LeanExecution
from server.graphql.schema import export_sdl
from server.http.app import create_app
from server.http.appkeys import METRICS
from server.http.graphql_view import graphql_view
from server.http.logs import RedactingAccessLogger
from server.storage import engines
from server.storage.sqlite_pool import PooledSQLiteEngine
from server.storage.tables import TABLES
from tests.fake_github import DEFAULT_APPS, FakeGitHub, start_fake_github
from tests.graphql import test_fuzz as fuzz
from tests.helpers import (
    GraphQLClient,
    MovableClock,
    PostgresServer,
    base_env,
    github_env,
    migrate,
)

PRINCIPALS = fuzz.PRINCIPALS
# What differs between two answers that are the same: when and how fast.
TIMINGS = ("timestamp", "duration_ms", "graphql_ms")
COMPARED_HEADERS = ("Content-Type", "X-Request-Id", "WWW-Authenticate", "Retry-After")
# Both media types a client may ask for, whose status codes differ (server.http.graphql_responses).
ACCEPTS = (None, "application/graphql-response+json")
# ghvault's own lines and its access line. Not the event loop's or a driver's: when one
# root field fails, graphql-core cancels the fields still running beside it, and whether
# a cancelled one was inside a transaction by then (asyncio then logs asyncpg resetting
# the connection) is a matter of timing on either path, not of the path.
COMPARED_LOGGERS = ("ghvault.", "aiohttp.access")


# ---------------------------------------------------------------- randomness


class Randomness:
    """`secrets` and `uuid.uuid4` drawing from the current world's seeded generator.

    Outside a world's request they are the real ones. The requests of the
    two worlds never overlap, so one switch serves both.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.current: random.Random | None = None
        real_token_bytes, real_choice, real_uuid4 = secrets.token_bytes, secrets.choice, uuid.uuid4

        def token_bytes(nbytes: int | None = None) -> bytes:
            if self.current is None:
                return real_token_bytes(nbytes)
            return self.current.randbytes(32 if nbytes is None else nbytes)

        def token_hex(nbytes: int | None = None) -> str:
            return token_bytes(nbytes).hex()

        def token_urlsafe(nbytes: int | None = None) -> str:
            return base64.urlsafe_b64encode(token_bytes(nbytes)).rstrip(b"=").decode("ascii")

        def choice(sequence: Any) -> Any:
            if self.current is None:
                return real_choice(sequence)
            return self.current.choice(sequence)

        def uuid4() -> uuid.UUID:
            if self.current is None:
                return real_uuid4()
            return uuid.UUID(bytes=self.current.randbytes(16), version=4)

        for name, replacement in (
            ("token_bytes", token_bytes),
            ("token_hex", token_hex),
            ("token_urlsafe", token_urlsafe),
            ("choice", choice),
        ):
            monkeypatch.setattr(secrets, name, replacement)
        monkeypatch.setattr(uuid, "uuid4", uuid4)

    @contextmanager
    def of(self, world: World) -> Iterator[None]:
        """Within one of `world`'s requests: its randomness, and its database.

        Piccolo's tables are bound to one engine per process at a time.
        """
        engines.bind_tables(world.engine)
        self.current = world.rng
        try:
            yield
        finally:
            self.current = None


# ---------------------------------------------------------------- the worlds


@dataclass
class World:
    name: str
    client: TestClient
    fake: FakeGitHub
    clock: MovableClock
    app: Any
    engine: Engine[Any]
    rng: random.Random = field(default_factory=lambda: random.Random(20))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str | None]
    body: Any
    logs: list[dict[str, Any]]
    metrics: dict[str, float]


@pytest.fixture(params=["sqlite", "postgres"])
async def engines_pair(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[tuple[tuple[Engine[Any], str], tuple[Engine[Any], str]]]:
    """Two migrated, empty databases of one engine, started (tables bound to neither)."""
    pair: list[tuple[Engine[Any], str]] = []
    async with AsyncExitStack() as stack:
        if request.param == "sqlite":
            for name in ("strawberry", "lean"):
                path = tmp_path / f"{name}.sqlite"
                shutil.copyfile(sqlite_template, path)
                pair.append((PooledSQLiteEngine(path=str(path)), f"sqlite:///{path}"))
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            first = request.getfixturevalue("postgres_url")
            second = server.create_database()
            stack.callback(server.drop_database, second)
            await asyncio.to_thread(migrate, second)
            pair = [(PostgresEngine(config={"dsn": url}), url) for url in (first, second)]
        for engine, _ in pair:
            await stack.enter_async_context(engines.serving(engine))
            if not engines.is_sqlite(engine):
                names = ", ".join(table._meta.tablename for table in TABLES)
                await engine.run_ddl(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        yield pair[0], pair[1]


@pytest.fixture
async def worlds(
    engines_pair: tuple[tuple[Engine[Any], str], tuple[Engine[Any], str]],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[World, World, Randomness]]:
    randomness = Randomness(monkeypatch)
    async with AsyncExitStack() as stack:
        made = []
        for name, (engine, url) in zip(("strawberry", "lean"), engines_pair, strict=True):
            fake = await stack.enter_async_context(start_fake_github(apps=DEFAULT_APPS))
            env = base_env(GHVAULT_ENV="production", DATABASE_URL=url, **github_env(fake))
            clock = MovableClock()
            app = create_app(Settings.from_env(env), clock=clock, engine=engine)
            graphql_view(app).lean_documents = (
                LeanDocuments.NONE if name == "strawberry" else LeanDocuments.ALL
            )
            server = TestServer(app)
            await server.start_server(access_log_class=RedactingAccessLogger)
            client = TestClient(server)
            stack.push_async_callback(client.close)
            made.append(World(name, client, fake, clock, app, engine))
        yield made[0], made[1], randomness


# ---------------------------------------------------------------- requests and answers


@dataclass(frozen=True)
class Raw:
    """A request body sent as it is, with its content type."""

    body: bytes
    content_type: str = "application/json"


Sendable = fuzz.Request | Raw


def _payload(request: Sendable) -> tuple[bytes, str]:
    if isinstance(request, Raw):
        return request.body, request.content_type
    body = json.dumps({"query": request.document, "variables": request.variables})
    return body.encode(), "application/json"


def _normal(text: str, world: World) -> str:
    # Each world's fake GitHub listens on a port of its own (in authorize URLs).
    return text.replace(world.fake.base_url, "<github>")


def _operation_counts(world: World) -> dict[str, float]:
    exposition = generate_latest(world.app[METRICS].registry).decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("ghvault_graphql_operation_duration_seconds_count")
    }


async def _answer(
    world: World,
    randomness: Randomness,
    log_output: Any,
    request: Sendable,
    auth: str | None,
    accept: str | None,
) -> Answer:
    body, content_type = _payload(request)
    headers = {"Content-Type": content_type}
    if auth is not None:
        headers["Authorization"] = auth
    if accept is not None:
        headers["Accept"] = accept
    before = len(log_output.getvalue())
    with randomness.of(world):
        response = await world.client.post("/graphql", data=body, headers=headers)
        text = await response.text()
    lines = [json.loads(line) for line in log_output.getvalue()[before:].splitlines()]
    logs = [
        {name: value for name, value in line.items() if name not in TIMINGS}
        for line in lines
        if "request_id" in line and line["logger"].startswith(COMPARED_LOGGERS)
    ]
    try:
        parsed: Any = json.loads(_normal(text, world))
    except ValueError:
        parsed = text
    return Answer(
        status=response.status,
        headers={name: response.headers.get(name) for name in COMPARED_HEADERS},
        body=parsed,
        logs=json.loads(_normal(json.dumps(logs), world)),
        metrics=_operation_counts(world),
    )


@dataclass
class Comparison:
    strawberry: World
    lean: World
    randomness: Randomness
    log_output: Any
    documents: int = 0
    requests: int = 0
    # Requests of the lean world that the lean path answered.
    lean_answers: int = 0

    def count_lean_answers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        execute = LeanExecution.execute

        async def counting(executor: LeanExecution, *args: Any, **kwargs: Any) -> Any:
            assert executor is graphql_view(self.lean.app).lean, "the reference world went lean"
            self.lean_answers += 1
            return await execute(executor, *args, **kwargs)

        monkeypatch.setattr(LeanExecution, "execute", counting)

    async def same(
        self, request: Sendable, auth: str | None, role: str, accept: str | None = None
    ) -> None:
        answers = [
            await _answer(world, self.randomness, self.log_output, request, auth, accept)
            for world in (self.strawberry, self.lean)
        ]
        self.requests += 1
        assert answers[1] == answers[0], f"as {role}, Accept {accept}: {request}"


# Requests that exercise each way an answer can go, beyond what the fuzzer writes.
STATUS = "query Status { viewer { githubToken { state } } }"
CHECKOUT = (
    'mutation { checkoutGithubToken(userId: "alice") { __typename'
    " ... on CheckoutSuccess { accessToken refreshed } ... on OperationError { code } } }"
)
HAND_WRITTEN: list[Sendable] = [
    fuzz.Request(STATUS),
    fuzz.Request("{ viewer { id role githubTokens { appType state needsReconnect } } }"),
    fuzz.Request("query A { viewer { id } } query B { viewer { role } }"),
    fuzz.Request("query A { viewer { id } } query B { viewer { role } }", {}),
    fuzz.Request(CHECKOUT),
    fuzz.Request('{ user(id: "bob") { id email githubTokens { state } } }'),
    fuzz.Request("{ githubTokens(first: 2) { edges { node { userId state } } } }"),
    fuzz.Request("{ githubTokens(first: 1000) { edges { node { userId } } } }"),
    fuzz.Request("{ auditEvents(first: 3) { edges { node { action } } } }"),
    fuzz.Request("query($id: ID!) { user(id: $id) { id } }", {"id": 5}),
    fuzz.Request("query($id: ID!) { user(id: $id) { id } }", {"id": None}),
    fuzz.Request("query($id: ID!) { user(id: $id) { id } }", {"id": "bob", "extra": 1}),
    fuzz.Request("query($first: Int) { githubTokens(first: $first) { __typename } }", {}),
    fuzz.Request("{ viewer { id } "),
    fuzz.Request("{ viewer { nope } }"),
    fuzz.Request("{ __schema { types { name } } }"),
    fuzz.Request("{ viewer { " + "id " * 100 + "} }"),
    fuzz.Request("subscription { githubTokenChanged { state } }"),
    fuzz.Request('{ user(id: "a\\u0000b") { id } }'),
    fuzz.Request('mutation { purgeUser(userId: "nobody") { __typename } }'),
    fuzz.Request('mutation { revokeToken(input: {userId: "bob"}) { __typename } }'),
    Raw(b'{"query": "{ viewer { id } }", "operationName": "Missing"}'),
    Raw(b'{"query": "query A { viewer { id } }", "operationName": "A"}'),
    Raw(b'{"query": "{ viewer { id } }", "operationName": 3}'),
    Raw(b'{"query": "{ viewer { id } }", "extensions": {"a": 1}}'),
    Raw(b'{"query": "{ viewer { id } }", "extensions": []}'),
    Raw(b'{"query": "{ viewer { id } }", "variables": []}'),
    Raw(b'{"query": 7}'),
    Raw(b'{"query": ""}'),
    Raw(b"{}"),
    Raw(b'[{"query": "{ viewer { id } }"}]'),
    Raw(b"null"),
    Raw(b"{not json"),
    Raw(b'{"query": "{ viewer { id } }", "x": "\xff"}'),
    Raw(b'{"query": "{ viewer { id } }", "variables": {"v": "a\\u0000"}}'),
    Raw(b'{"query": "{ viewer { id } }"}', content_type="text/plain"),
]


async def test_hand_written_requests_get_the_same_answer_on_both_paths(
    worlds: tuple[World, World, Randomness], log_output: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    strawberry, lean, randomness = worlds
    comparison = Comparison(strawberry, lean, randomness, log_output)
    comparison.count_lean_answers(monkeypatch)
    with randomness.of(strawberry):
        await fuzz._seed(GraphQLClient(strawberry.client), strawberry.clock, strawberry.fake)
    with randomness.of(lean):
        await fuzz._seed(GraphQLClient(lean.client), lean.clock, lean.fake)

    for request in HAND_WRITTEN:
        comparison.documents += 1
        for accept in (*ACCEPTS, *ACCEPTS):
            for role, auth in [*PRINCIPALS.items(), ("anonymous", None)]:
                await comparison.same(request, auth, role, accept)

    assert comparison.documents == len(HAND_WRITTEN)
    # Every valid query and mutation sent as a principal (the rest is Strawberry's).
    assert comparison.lean_answers >= 12 * 2 * len(PRINCIPALS)


async def test_schema_driven_requests_get_the_same_answer_on_both_paths(
    worlds: tuple[World, World, Randomness], log_output: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    strawberry, lean, randomness = worlds
    comparison = Comparison(strawberry, lean, randomness, log_output)
    seeded = []
    comparison.count_lean_answers(monkeypatch)
    for world in (strawberry, lean):
        with randomness.of(world):
            seeded.append(await fuzz._seed(GraphQLClient(world.client), world.clock, world.fake))
    assert seeded[0] == seeded[1], "the two worlds were not seeded alike"
    loop = asyncio.get_running_loop()
    schema = graphql.build_schema(export_sdl())
    scalars = fuzz._custom_scalars(seeded[0])
    assert schema.query_type is not None
    assert schema.mutation_type is not None
    roots = [*schema.query_type.fields, *schema.mutation_type.fields]
    requests = st.one_of(
        st.one_of(*(from_schema(schema, fields=[root], custom_scalars=scalars) for root in roots)),
        from_schema(schema, custom_scalars=scalars, mode=Mode.POSITIVE),
        from_schema(schema, custom_scalars=scalars, mode=Mode.NEGATIVE),
    ).map(fuzz.Request) | fuzz._store_requests(seeded[0])

    def run(coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(
            timeout=fuzz.REQUEST_TIMEOUT_SECONDS
        )

    # The same examples on every run (more with GHVAULT_FUZZ_EXAMPLES): a difference
    # found is found again.
    @settings(
        max_examples=fuzz.EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests)
    def both_paths_answer_alike(request: fuzz.Request) -> None:
        comparison.documents += 1
        for (role, auth), accept in zip(PRINCIPALS.items(), (*ACCEPTS, *ACCEPTS), strict=False):
            run(comparison.same(request, auth, role, accept))

    # Hypothesis drives the examples from a worker thread; the requests run on this loop.
    await asyncio.to_thread(both_paths_answer_alike)

    print(
        f"\nlean path vs Strawberry's: {comparison.documents} documents compared, "
        f"{comparison.requests} requests each, {comparison.lean_answers} of them lean"
    )
    assert comparison.documents >= min(fuzz.EXAMPLES, 10)
    assert comparison.lean_answers > 0


async def test_an_exception_out_of_graphql_core_is_masked_and_logged(
    aiohttp_client: Any,
    database: Any,
    clock: MovableClock,
    fake_github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    log_output: Any,
) -> None:
    """graphql-core turns resolver errors into field errors; should `execute` itself raise,
    the lean path answers an unexpected error, masked, and logs the traceback."""
    client = await fuzz._production_client(aiohttp_client, database, clock, fake_github)
    secret = "ghu_" + "s" * 36

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"broken with {secret}")

    monkeypatch.setattr(lean_module, "execute", broken)
    response = await client.http.post(
        "/graphql", json={"query": STATUS}, headers={"Authorization": PRINCIPALS["USER"]}
    )

    body = await response.json()
    assert response.status == 200
    assert "data" not in body  # nothing executed, by the error's lack of a path
    (error,) = body["errors"]
    assert error["message"] == "Unexpected error"
    assert error["extensions"]["code"] == "INTERNAL"
    assert error["extensions"]["requestId"] == response.headers["X-Request-Id"]
    logged = log_output.getvalue()
    assert "RuntimeError: broken with" in logged
    assert secret not in logged
