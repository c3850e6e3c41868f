"""GET /metrics: what ghvault counts, in Prometheus' text format, with no id or secret."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.config import ConfigError, Settings
from server.domain.enums import Role
from server.domain.webhook import sign
from server.http.app import create_app
from server.storage import engines
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    GITHUB_TIMEOUT_SECONDS,
    REVOKE,
    SERVICE,
    STORE,
    WEBHOOK_SECRET,
    Database,
    GraphQLClient,
    MovableClock,
    base_env,
    bearer,
    random_token,
    refresh_token,
    store_input,
)
from tests.test_cli import GHVAULT, clean_env, free_port, stop, wait_until_healthy

CHECKOUT = """mutation($userId: ID!) { checkoutGithubToken(userId: $userId, appType: STANDARD) {
  __typename ... on OperationError { code } } }"""
METRICS_TOKEN = "metrics-token-for-the-tests"


class Scrape:
    """One /metrics answer, parsed: a sample's value by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))


async def scrape(gql: GraphQLClient, **headers: str) -> Scrape:
    response = await gql.http.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    return Scrape(await response.text())


async def store_live_token(
    gql: GraphQLClient,
    fake: FakeGitHub,
    clock: MovableClock,
    user_id: str,
    github_id: int,
    *,
    expires_in: timedelta,
    refresh: str | None = None,
) -> None:
    access, live_refresh = fake.seed_token(STANDARD_APP.client_id, github_id, "octocat")
    variables = store_input(
        user_id,
        now=clock(),
        github_user_id=str(github_id),
        access=access,
        refresh=refresh or live_refresh,
    )
    variables["input"]["accessTokenExpiresAt"] = (clock() + expires_in).isoformat()
    result = await gql.data(STORE, variables, auth=SERVICE)
    assert result["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"


async def test_graphql_operations_are_counted_by_root_field_and_outcome(
    gql: GraphQLClient,
) -> None:
    """Make sure each operation lands in its root field and outcome: ok, an error code, or
    INVALID_QUERY for a document that does not validate."""
    for _ in range(2):
        await gql.post("query Mine { viewer { id } }", auth=ALICE)
    await gql.post("{ viewer { id } }")
    await gql.post("{ noSuchField }", auth=ALICE)
    await gql.post("{ a: viewer { id } b: viewer { role } }", auth=ALICE)
    await gql.post("{ viewer { id } __typename }", auth=ALICE)

    metrics = await scrape(gql)

    count = "ghvault_graphql_operation_duration_seconds_count"
    assert metrics.value(count, operation="viewer", outcome="ok") == 3
    # Refused from its headers, before the document (and so its root field) is read.
    assert metrics.value(count, operation="not_parsed", outcome="UNAUTHENTICATED") == 1
    assert metrics.value(count, operation="invalid", outcome="INVALID_QUERY") == 1
    assert metrics.value(count, operation="multiple", outcome="ok") == 1
    total = metrics.value(
        "ghvault_graphql_operation_duration_seconds_sum", operation="viewer", outcome="ok"
    )
    assert total is not None
    assert total > 0


async def test_label_values_never_carry_ids_names_or_secrets(gql: GraphQLClient) -> None:
    """Make sure neither a user id, an operation name a client chose, nor a token-shaped
    field name reaches the metrics."""
    user = f"user-{uuid.uuid4().hex}"
    token = random_token("ghu_", 36)
    await gql.post(f"query Op_{token[4:20]} {{ viewer {{ id }} }}", auth=bearer(user, Role.USER))
    await gql.post(f"{{ {token} }}", auth=ALICE)
    await gql.post(f'{{ user(id: "{user}") {{ id }} }}', auth=ALICE)

    text = (await scrape(gql)).text

    for secret in (user, token, token[4:20], "alice"):
        assert secret not in text


async def test_github_calls_and_refreshes_are_counted_by_endpoint_and_outcome(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a refresh GitHub grants and one it refuses show as calls to the refresh
    endpoint (HTTP 200 both: GitHub's way) and as refreshes by outcome."""
    await store_live_token(gql, fake_github, clock, "alice", 9001, expires_in=timedelta(minutes=1))
    await store_live_token(
        gql,
        fake_github,
        clock,
        "bob",
        9002,
        expires_in=timedelta(minutes=1),
        refresh=refresh_token(),
    )

    granted = await gql.data(CHECKOUT, {"userId": "alice"}, auth=SERVICE)
    refused = await gql.data(CHECKOUT, {"userId": "bob"}, auth=SERVICE)

    assert granted["checkoutGithubToken"]["__typename"] == "CheckoutSuccess"
    assert refused["checkoutGithubToken"]["code"] == "REFRESH_FAILED"
    metrics = await scrape(gql)
    calls = "ghvault_github_request_duration_seconds_count"
    assert metrics.value(calls, endpoint="refresh", outcome="200") == 2
    refreshes = "ghvault_token_refreshes_total"
    assert metrics.value(refreshes, outcome="refreshed") == 1
    assert metrics.value(refreshes, outcome="bad_refresh_token") == 1
    assert metrics.value(refreshes, outcome="unavailable") == 0
    assert (
        metrics.value(
            "ghvault_graphql_operation_duration_seconds_count",
            operation="checkoutGithubToken",
            outcome="ok",
        )
        == 2
    )


@pytest.mark.parametrize(("fault", "outcome"), [("http_502", "502"), ("timeout", "timeout")])
async def test_github_trouble_is_counted_as_such(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, fault: str, outcome: str
) -> None:
    """Make sure a GitHub answering 502, or not in time, counts as such a call and as an
    unavailable refresh."""
    await store_live_token(gql, fake_github, clock, "alice", 9001, expires_in=timedelta(minutes=1))
    if fault == "http_502":
        fake_github.fail_with_status = 502
    else:
        fake_github.hang_seconds = GITHUB_TIMEOUT_SECONDS + 1

    result = await gql.data(CHECKOUT, {"userId": "alice"}, auth=SERVICE)

    assert result["checkoutGithubToken"]["code"] == "GITHUB_UNAVAILABLE"
    metrics = await scrape(gql)
    calls = "ghvault_github_request_duration_seconds_count"
    assert metrics.value(calls, endpoint="refresh", outcome=outcome) == 1
    assert metrics.value("ghvault_token_refreshes_total", outcome="unavailable") == 1


async def test_webhook_deliveries_are_counted_by_result(gql: GraphQLClient) -> None:
    """Make sure a processed, a repeated, a badly signed and a malformed delivery each count."""
    body = b'{"action": "revoked", "sender": {"id": 424242, "login": "x", "type": "User"}}'
    delivery = str(uuid.uuid4())
    signed = {
        "X-Hub-Signature-256": sign(WEBHOOK_SECRET.encode(), body),
        "X-GitHub-Event": "github_app_authorization",
        "X-GitHub-Delivery": delivery,
    }
    for headers in (signed, signed, {**signed, "X-Hub-Signature-256": "sha256=00"}):
        await gql.http.post("/webhooks/github", data=io.BytesIO(body), headers=headers)
    await gql.http.post(
        "/webhooks/github",
        data=io.BytesIO(b"[]"),
        headers={**signed, "X-Hub-Signature-256": sign(WEBHOOK_SECRET.encode(), b"[]")},
    )

    metrics = await scrape(gql)

    deliveries = "ghvault_webhook_deliveries_total"
    assert metrics.value(deliveries, result="processed") == 1
    assert metrics.value(deliveries, result="duplicate") == 1
    assert metrics.value(deliveries, result="bad_signature") == 1
    assert metrics.value(deliveries, result="malformed") == 1
    assert delivery not in metrics.text


async def test_tokens_are_counted_by_app_type_and_state(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure the token gauge reads the database, every state and app type present."""
    await store_live_token(gql, fake_github, clock, "alice", 9001, expires_in=timedelta(hours=8))
    await store_live_token(gql, fake_github, clock, "bob", 9002, expires_in=timedelta(hours=8))
    await store_live_token(gql, fake_github, clock, "carol", 9003, expires_in=timedelta(hours=8))
    revoked = await gql.data(
        REVOKE, {"input": {"userId": "bob", "appType": "STANDARD"}}, auth=ADMIN
    )
    assert revoked["revokeToken"]["__typename"] == "RevokeTokenSuccess"
    clock.advance(timedelta(hours=9))
    await store_live_token(gql, fake_github, clock, "dave", 9004, expires_in=timedelta(hours=8))

    metrics = await scrape(gql)

    tokens = "ghvault_tokens"
    assert metrics.value(tokens, app_type="standard", state="active") == 1
    assert metrics.value(tokens, app_type="standard", state="expired") == 2
    assert metrics.value(tokens, app_type="standard", state="revoked") == 1
    assert metrics.value(tokens, app_type="lite", state="active") == 0
    assert metrics.value("ghvault_database_connections_in_use") == 0


async def test_connections_in_use_follow_the_pool(database: Database) -> None:
    """Make sure the pool gauge's source counts a connection lent to a transaction."""
    assert engines.connections_in_use(database.engine) == 0
    async with database.engine.transaction():
        await database.engine.run_ddl("SELECT 1")
        assert engines.connections_in_use(database.engine) == 1
    assert engines.connections_in_use(database.engine) == 0


@pytest.fixture
async def guarded(aiohttp_client: Any, sqlite_url: str) -> Any:
    settings = Settings.from_env(base_env(DATABASE_URL=sqlite_url, METRICS_TOKEN=METRICS_TOKEN))
    return await aiohttp_client(create_app(settings))


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-of-some-length", f"Basic {METRICS_TOKEN}", METRICS_TOKEN],
)
async def test_metrics_token_is_required_when_set(guarded: Any, authorization: str | None) -> None:
    """Make sure that with METRICS_TOKEN set, /metrics answers 401 without that bearer."""
    headers = {"Authorization": authorization} if authorization else {}
    response = await guarded.get("/metrics", headers=headers)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "ghvault_" not in await response.text()


async def test_metrics_token_opens_the_metrics(guarded: Any) -> None:
    response = await guarded.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    assert response.status == 200
    assert "ghvault_graphql_operation_duration_seconds" in await response.text()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN"),
        ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/ghvault-metrics"}, "PROMETHEUS_MULTIPROC_DIR"),
    ],
)
def test_bad_metrics_settings_stop_start_up(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(base_env(**env))


# --- several processes ------------------------------------------------------------


@asynccontextmanager
async def serving(env: dict[str, str], cwd: Path) -> AsyncIterator[str]:
    """`ghvault serve` with `env` until the block ends; its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        str(GHVAULT),
        "serve",
        cwd=cwd,
        env={**env, "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await wait_until_healthy(http, base, process, time.monotonic() + 30)
        yield base
    finally:
        await stop(process)


async def test_several_processes_add_up(tmp_path: Path, sqlite_url: str) -> None:
    """Make sure two server processes sharing PROMETHEUS_MULTIPROC_DIR report the sum of
    their operations from either one, while the token count (a database fact) is not
    doubled."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = clean_env(
        **base_env(DATABASE_URL=sqlite_url, HOST="127.0.0.1", PROMETHEUS_MULTIPROC_DIR=str(shared))
    )
    query = {"query": "{ viewer { id } }"}
    variables = store_input("alice", now=datetime.now(UTC), github_user_id="9001")

    async with (
        serving(env, tmp_path) as first,
        serving(env, tmp_path) as second,
        aiohttp.ClientSession() as http,
    ):
        for base, times in ((first, 2), (second, 3)):
            for _ in range(times):
                async with http.post(
                    f"{base}/graphql", json=query, headers={"Authorization": ALICE}
                ) as response:
                    assert response.status == 200
        store = {"query": STORE, "variables": variables}
        async with http.post(
            f"{first}/graphql", json=store, headers={"Authorization": SERVICE}
        ) as response:
            assert "StoreGithubTokenSuccess" in await response.text()
        scrapes = []
        for base in (first, second):
            async with http.get(f"{base}/metrics") as response:
                scrapes.append(Scrape(await response.text()))

    count = "ghvault_graphql_operation_duration_seconds_count"
    for metrics in scrapes:
        assert metrics.value(count, operation="viewer", outcome="ok") == 5
        assert metrics.value(count, operation="storeGithubToken", outcome="ok") == 1
        assert metrics.value("ghvault_tokens", app_type="standard", state="active") == 1
        assert metrics.value("ghvault_database_connections_in_use") == 0
    assert {path.name.split("_")[0] for path in shared.iterdir()} >= {"histogram", "counter"}
