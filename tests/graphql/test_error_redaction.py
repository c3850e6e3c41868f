"""Unexpected errors reach the client and the log without any secret in them."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from graphql import located_error
from hypothesis import given, settings
from hypothesis import strategies as st

from server.config import Settings
from server.domain import status
from server.domain.enums import Role
from server.graphql.errors import client_error, log_error
from server.http.app import create_app
from server.http.logs import json_handler
from tests.helpers import (
    ALICE,
    VIEWER_TOKEN,
    Database,
    GraphQLClient,
    MovableClock,
    base_env,
    bearer,
    error_codes,
    random_token,
)
from tests.test_redaction import EMBEDDINGS, SECRETS, Secret, leaked_windows, raise_chain


def _secrets() -> dict[str, str]:
    return {
        "access": random_token("ghu_", 36),
        "refresh": random_token("ghr_", 76),
        "pat": "github_pat_" + random_token("", 22) + "_" + random_token("", 59),
        "jwt": bearer("someone", Role.ADMIN, ttl=timedelta(hours=1)).split(" ")[1],
    }


def _failing_resolver(secrets: dict[str, str]) -> Any:
    async def token_status(*args: object, **kwargs: object) -> None:
        try:
            raise KeyError(f"inner cause {secrets['pat']}")
        except KeyError as cause:
            raise RuntimeError(
                f"refresh failed for {secrets['access']} / {secrets['refresh']}"
                f" with Authorization: Bearer {secrets['jwt']}"
            ) from cause

    return token_status


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    leaks = []
    for name, secret in secrets.items():
        body = secret.removeprefix("github_pat_") if name == "pat" else secret
        body = body[4:] if name in ("access", "refresh") else body
        if any(body[i : i + 8] in text for i in range(len(body) - 7)):
            leaks.append(name)
    return leaks


async def test_resolver_exception_is_redacted_for_client_and_log(
    gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch, log_output
) -> None:
    """ghu_, a 76-char ghr_, github_pat_ and a JWT in an exception: none get out."""
    secrets = _secrets()
    monkeypatch.setattr(status, "token_status", _failing_resolver(secrets))

    body = await gql.post(VIEWER_TOKEN, auth=ALICE)

    assert error_codes(body) == ["INTERNAL"]
    message = body["errors"][0]["message"]
    assert "refresh failed for ghu_[REDACTED] / ghr_[REDACTED]" in message
    assert _leaks(json.dumps(body), secrets) == []
    log = log_output.getvalue()
    assert "refresh failed for ghu_[REDACTED]" in log
    assert "inner cause github_pat_[REDACTED]" in log, "the chained cause is logged, redacted"
    assert _leaks(log, secrets) == []


async def test_production_masks_unexpected_errors_with_a_request_id(
    aiohttp_client: Any,
    database: Database,
    clock: MovableClock,
    monkeypatch: pytest.MonkeyPatch,
    log_output,
) -> None:
    """In production the client gets "Unexpected error" and the id of the logged detail."""
    secrets = _secrets()
    monkeypatch.setattr(status, "token_status", _failing_resolver(secrets))
    settings = Settings.from_env(base_env(GHVAULT_ENV="production", DATABASE_URL=database.url))
    client = GraphQLClient(
        await aiohttp_client(create_app(settings, clock=clock, engine=database.engine))
    )

    response = await client.http.post(
        "/graphql", json={"query": VIEWER_TOKEN}, headers={"Authorization": ALICE}
    )
    body = await response.json()

    error = body["errors"][0]
    assert error["message"] == "Unexpected error"
    request_id = error["extensions"]["requestId"]
    assert response.headers["X-Request-Id"] == request_id
    assert "refresh failed" not in json.dumps(body)
    log = log_output.getvalue()
    assert request_id in log
    assert "refresh failed for ghu_[REDACTED]" in log
    assert _leaks(log, secrets) == []


async def test_a_token_in_a_malformed_query_is_not_echoed(gql: GraphQLClient) -> None:
    """Syntax errors quote the query; a token pasted into it is redacted."""
    token = random_token("ghu_", 36)
    body = await gql.post("{ viewer { id } " + token, auth=ALICE)
    assert body["errors"]
    assert token[4:] not in json.dumps(body)


@settings(max_examples=100, deadline=None)
@given(SECRETS, SECRETS, st.sampled_from(EMBEDDINGS), st.text(), st.text())
def test_no_secret_survives_the_graphql_error_or_log_path(
    outer: Secret, inner: Secret, embed: Any, before: str, after: str
) -> None:
    """Any token in any carrier, raised from a resolver: the client and log see none of it."""
    exc = raise_chain(embed(outer.text, before, after), inner.text)
    error = located_error(exc, path=["viewer"])
    stream = io.StringIO()
    handler = json_handler(stream)
    logger = logging.getLogger("ghvault.graphql")
    logger.addHandler(handler)
    try:
        log_error(error, request_id="r1")
    finally:
        logger.removeHandler(handler)
    outputs = [
        json.dumps(client_error(error, request_id="r1", production=production).formatted)
        for production in (False, True)
    ]
    context = (before, after, repr(before), repr(after), embed("", before, after))
    for token in (outer, inner):
        for output in (*outputs, stream.getvalue(), json.loads(stream.getvalue())["message"]):
            assert leaked_windows(token.secret, output, *context) == set()
