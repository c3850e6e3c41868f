"""An app type this server has no GitHub credentials for: one refusal wherever GitHub is needed."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from server.config import Settings
from server.http.app import create_app
from tests.domain.test_connect import approve, complete, start
from tests.domain.test_disconnect import DISCONNECT, EVENTS
from tests.fake_github import LITE_APP, FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    base_env,
    github_env,
    store_input,
)

CHECKOUT_LITE = """
mutation { checkoutGithubToken(userId: "alice", appType: LITE) {
  __typename ... on OperationError { code message field } } }
"""

NOT_CONFIGURED = {
    "__typename": "OperationError",
    "code": "INVALID_INPUT",
    "message": "The LITE GitHub App is not configured on this server.",
    "field": "appType",
}


@pytest.fixture
async def standard_only(
    aiohttp_client: Any, database: Database, fake_github: FakeGitHub, clock: MovableClock
) -> GraphQLClient:
    """The same database and clock, served by a ghvault without the lite app's credentials."""
    apps = {name: value for name, value in github_env(fake_github).items() if "_LITE" not in name}
    settings = Settings.from_env(base_env(DATABASE_URL=database.url, **apps))
    app = create_app(settings, clock=clock, engine=database.engine)
    return GraphQLClient(await aiohttp_client(app))


async def store_lite_token(gql: GraphQLClient, clock: MovableClock, expires_in: timedelta) -> None:
    variables = store_input("alice", now=clock(), app_type="LITE")
    variables["input"]["accessTokenExpiresAt"] = (clock() + expires_in).isoformat()
    stored = await gql.data(STORE, variables, auth=SERVICE)
    assert stored["storeGithubToken"]["__typename"] == "StoreGithubTokenSuccess"


async def test_starting_a_connect_to_an_unconfigured_app_is_refused(
    standard_only: GraphQLClient,
) -> None:
    """Make sure a connect to an app the server cannot talk to is refused up front."""
    assert await start(standard_only, app_type="LITE") == NOT_CONFIGURED


async def test_completing_a_connect_to_an_app_no_longer_configured_is_refused(
    gql: GraphQLClient, standard_only: GraphQLClient, fake_github: FakeGitHub
) -> None:
    """Make sure a connect started before the app's credentials went away ends in the same
    refusal."""
    started = await start(gql, app_type="LITE")
    code = approve(fake_github, started, client_id=LITE_APP.client_id)
    assert await complete(standard_only, code, started["state"]) == NOT_CONFIGURED


async def test_a_checkout_that_needs_a_refresh_from_an_unconfigured_app_is_refused(
    standard_only: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure the commit worker hears the same refusal, not "try again later"."""
    await store_lite_token(standard_only, clock, expires_in=timedelta(minutes=1))
    result = await standard_only.data(CHECKOUT_LITE, auth=SERVICE)
    assert result["checkoutGithubToken"] == NOT_CONFIGURED


async def test_disconnecting_from_an_unconfigured_app_still_deletes_the_tokens(
    standard_only: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure disconnect does its local part and records why GitHub was not asked."""
    await store_lite_token(standard_only, clock, expires_in=timedelta(hours=8))
    result = await standard_only.data(DISCONNECT, {"appType": "LITE"}, auth=ALICE)
    assert result["disconnectGithub"]["revokedAtGithub"] is False
    assert result["disconnectGithub"]["token"]["state"] == "NOT_CONNECTED"
    events = await standard_only.data(
        EVENTS, {"userId": "alice", "action": "TOKEN_DISCONNECTED"}, auth=ADMIN
    )
    (event,) = events["auditEvents"]["edges"]
    assert json.loads(event["node"]["detail"])["github"] == "not_configured"
