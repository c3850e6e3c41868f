"""reportGithubTokenRejected: GitHub is asked about the reported version, and only that one
is refreshed or revoked."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from server.config import Settings
from server.storage.tables import AuditEvent
from tests.domain.test_checkout import client_waiting_for_github, store_live_token, token_row
from tests.domain.test_leases import checkout_for
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    error_codes,
    refresh_token,
    store_input,
)

REPORT = """
mutation Report($userId: ID!, $version: Int!) {
  reportGithubTokenRejected(userId: $userId, credentialVersion: $version) {
    __typename
    ... on ReportGithubTokenRejectedSuccess { outcome token { state revocationReason } }
    ... on OperationError { code message }
  }
}
"""
HOURS_8 = timedelta(hours=8)


async def report(gql: GraphQLClient, version: int, user_id: str = "alice") -> dict[str, Any]:
    body = await gql.data(REPORT, {"userId": user_id, "version": version}, auth=SERVICE)
    return body["reportGithubTokenRejected"]


async def audited(action: str) -> list[dict[str, Any]]:
    rows = await AuditEvent.select(AuditEvent.detail).where(AuditEvent.action == action)
    return [json.loads(row["detail"]) for row in rows]


async def test_a_token_github_still_accepts_is_left_alone(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a report about a token GitHub accepts asks GitHub once and changes nothing
    but the audit log."""
    await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)
    held = await checkout_for(gql, 600)
    before = await token_row(database)

    result = await report(gql, held["credentialVersion"])

    assert (result["outcome"], result["token"]["state"]) == ("STILL_VALID", "ACTIVE")
    assert fake_github.calls["check_token"] == 1
    assert fake_github.calls["refresh"] == 0
    assert await token_row(database) == before
    assert await audited("token_rejection_reported") == [
        {"credential_version": 1, "outcome": "still_valid"}
    ]


async def test_a_token_github_killed_is_refreshed_even_inside_its_window(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a token that died at GitHub inside its window is refreshed at once (the
    window is broken already), and the next checkout gets the new token."""
    await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)
    held = await checkout_for(gql, 600)
    fake_github.expire_access_token(held["accessToken"])

    result = await report(gql, held["credentialVersion"])
    again = await checkout_for(gql, 600)

    assert (result["outcome"], result["token"]["state"]) == ("REFRESHED", "ACTIVE")
    assert again["credentialVersion"] == held["credentialVersion"] + 1
    assert again["accessToken"] != held["accessToken"]
    assert fake_github.is_access_token_valid(again["accessToken"])
    assert fake_github.calls["refresh"] == 1
    assert [event["reason"] for event in await audited("token_refreshed")] == ["github_rejected"]


@pytest.mark.parametrize(
    ("refresh", "reason"),
    [("none", "GITHUB_REJECTED"), ("refused by GitHub", "REFRESH_FAILED")],
)
async def test_a_dead_token_that_cannot_be_refreshed_is_revoked(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    refresh: str,
    reason: str,
) -> None:
    """Make sure a dead token without a refresh token is revoked as GITHUB_REJECTED (and
    one whose refresh token GitHub refuses as REFRESH_FAILED), so checkouts stop."""
    access, _ = fake_github.seed_token(STANDARD_APP.client_id, 583231, "octocat")
    variables = store_input("alice", now=clock(), access=access, refresh=refresh_token())
    if refresh == "none":
        del variables["input"]["refreshToken"], variables["input"]["refreshTokenExpiresAt"]
    await gql.data(STORE, variables, auth=SERVICE)
    fake_github.expire_access_token(access)

    result = await report(gql, 1)

    assert result["outcome"] == "REVOKED"
    assert result["token"] == {"state": "REVOKED", "revocationReason": reason}
    blocked = await gql.data(
        'mutation { checkoutGithubToken(userId: "alice") { ... on OperationError { code } } }',
        auth=SERVICE,
    )
    assert blocked["checkoutGithubToken"]["code"] == "TOKEN_REVOKED"
    if refresh == "none":
        assert await audited("token_revoked") == [
            {"reason": "github_rejected", "already_revoked": False}
        ]


async def test_a_stale_report_changes_nothing_and_asks_github_nothing(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a report naming a version that is no longer stored (older, or one that
    never was) leaves the stored token alone and GitHub unasked."""
    await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)
    old = await checkout_for(gql, 600)
    fake_github.expire_access_token(old["accessToken"])
    await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)
    before = await token_row(database)

    results = [await report(gql, version) for version in (1, 99)]

    assert [result["outcome"] for result in results] == ["STALE", "STALE"]
    assert await token_row(database) == before
    assert fake_github.calls["check_token"] == 0
    assert await audited("token_rejection_reported") == []


async def test_a_report_racing_a_new_version_never_touches_it(
    aiohttp_client: Any,
    settings: Settings,
    clock: MovableClock,
    fake_github: FakeGitHub,
    database: Database,
) -> None:
    """Make sure that when new tokens are stored while GitHub is being asked about the
    reported (dead) version, the new version is neither refreshed nor revoked."""
    gql = await client_waiting_for_github(aiohttp_client, settings, clock, database, 10)
    dead, _ = await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)
    fake_github.expire_access_token(dead)
    fake_github.hang_seconds = 2

    reported = asyncio.ensure_future(report(gql, 1))
    async with asyncio.timeout(10):
        while fake_github.calls["check_token"] == 0:  # noqa: ASYNC110 -- the fake only counts
            await asyncio.sleep(0.01)
    fresh, _ = await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)
    result = await reported

    assert (result["outcome"], result["token"]["state"]) == ("STALE", "ACTIVE")
    row = await token_row(database)
    assert (row["credential_version"], row["revoked_at"]) == (2, None)
    assert fake_github.calls["refresh"] == 0
    fake_github.hang_seconds = 0
    assert (await checkout_for(gql, 60))["accessToken"] == fresh


async def test_reports_are_limited_per_user(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure one user's token cannot be reported more than 5 times a minute (each report
    costs a request to GitHub), while another user's reports still go through."""
    await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)
    await store_live_token(
        gql, fake_github, clock(), expires_in=HOURS_8, user_id="bob", github_id="4242"
    )

    allowed = [await report(gql, 1) for _ in range(5)]
    limited = await report(gql, 1)
    other = await report(gql, 1, user_id="bob")
    clock.advance(timedelta(minutes=1))
    later = await report(gql, 1)

    assert [result["outcome"] for result in allowed] == ["STILL_VALID"] * 5
    assert limited["code"] == "RATE_LIMITED"
    assert (other["outcome"], later["outcome"]) == ("STILL_VALID", "STILL_VALID")
    assert fake_github.calls["check_token"] == 7


async def test_what_cannot_be_reported(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a version that cannot exist is INVALID_INPUT, a user without a token is
    NOT_CONNECTED, and GitHub being down is GITHUB_UNAVAILABLE with nothing changed."""
    await store_live_token(gql, fake_github, clock(), expires_in=HOURS_8)

    body = await gql.post(REPORT, {"userId": "alice", "version": 0}, auth=SERVICE)
    assert error_codes(body) == ["INVALID_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "credentialVersion"
    assert (await report(gql, 1, user_id="nobody"))["code"] == "NOT_CONNECTED"
    fake_github.fail_with_status = 502
    assert (await report(gql, 1))["code"] == "GITHUB_UNAVAILABLE"
    assert fake_github.calls["refresh"] == 0
