"""Leases: a token ghvault hands out keeps working at GitHub until its usableUntil.

The fake GitHub kills the previous access and refresh tokens on every
refresh, as GitHub does, and notes when; each test checks the tokens it was
handed against that.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from server.config import Settings
from server.domain import checkout, leases
from server.domain.enums import AppType
from server.domain.errors import InvalidInput
from server.domain.github_access import GitHubAccess
from server.domain.locks import KeyedLocks
from server.domain.sweep import sweep
from server.storage.tables import AuditEvent
from tests.domain.test_checkout import store_live_token, token_row
from tests.fake_github import STANDARD_APP, FakeGitHub
from tests.helpers import (
    ADMIN,
    ALICE,
    REVOKE,
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    error_codes,
    store_input,
)

CHECKOUT = """
mutation Checkout($userId: ID!, $lease: Int!) {
  checkoutGithubToken(userId: $userId, leaseSeconds: $lease) {
    __typename
    ... on CheckoutSuccess {
      accessToken accessTokenExpiresAt refreshed usableUntil credentialVersion
    }
    ... on OperationError { code message }
  }
}
"""
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


async def checkout_for(gql: GraphQLClient, seconds: int, user_id: str = "alice") -> dict[str, Any]:
    """A successful checkout of `seconds`; fails the test on anything else."""
    body = await gql.data(CHECKOUT, {"userId": user_id, "lease": seconds}, auth=SERVICE)
    result = body["checkoutGithubToken"]
    assert result["__typename"] == "CheckoutSuccess", result
    return result


def until(result: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(result["usableUntil"])


def assert_kept_its_promise(fake: FakeGitHub, result: dict[str, Any]) -> None:
    """GitHub did not kill the token before the usableUntil it was handed out with."""
    killed = fake.killed_at(result["accessToken"])
    assert killed is None or killed >= until(result), (killed, result["usableUntil"])


async def test_a_checkout_is_promised_the_window_it_asked_for(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure usableUntil is now + leaseSeconds on a token with hours left, that the row
    keeps the latest end of all windows, and that leaseSeconds defaults to 600."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))
    started = clock()

    long = await checkout_for(gql, 900)
    clock.advance(timedelta(seconds=1))
    default = (
        await gql.data(
            'mutation { checkoutGithubToken(userId: "alice") '
            "{ ... on CheckoutSuccess { accessToken usableUntil } } }",
            auth=SERVICE,
        )
    )["checkoutGithubToken"]

    assert until(long) == started + timedelta(seconds=900)
    assert until(default) == clock() + timedelta(seconds=600)
    assert default["accessToken"] == long["accessToken"]
    assert (long["refreshed"], long["credentialVersion"]) == (False, 1)
    assert (await token_row(database))["leased_until"] == started + timedelta(seconds=900)


@pytest.mark.parametrize("seconds", [0, -1, 3601, 2**31 - 1])
async def test_lease_seconds_outside_1_to_3600_is_invalid_input(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, seconds: int
) -> None:
    """Make sure a window of no time or more than an hour is refused before anything
    happens: INVALID_INPUT naming leaseSeconds, and no checkout recorded."""
    await store_live_token(gql, fake_github, clock(), expires_in=timedelta(hours=8))

    body = await gql.post(CHECKOUT, {"userId": "alice", "lease": seconds}, auth=SERVICE)

    assert error_codes(body) == ["INVALID_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "leaseSeconds"
    assert await AuditEvent.count().where(AuditEvent.action == "token_checked_out") == 0


async def test_usable_until_stops_short_of_the_access_token_expiry(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a token that expires soon and cannot be refreshed (no refresh token) is
    promised only until its expiry minus the margin, so the caller can tell."""
    access, _ = fake_github.seed_token(STANDARD_APP.client_id, 583231, "octocat")
    variables = store_input("alice", now=clock(), access=access)
    variables["input"]["accessTokenExpiresAt"] = (clock() + 8 * MINUTE).isoformat()
    del variables["input"]["refreshToken"], variables["input"]["refreshTokenExpiresAt"]
    await gql.data(STORE, variables, auth=SERVICE)

    result = await checkout_for(gql, 600)

    assert until(result) == clock() + 8 * MINUTE - leases.EXPIRY_MARGIN
    assert result["refreshed"] is False
    clock.advance(8 * MINUTE)
    refused = (await gql.data(CHECKOUT, {"userId": "alice", "lease": 60}, auth=SERVICE))[
        "checkoutGithubToken"
    ]
    assert refused["code"] == "REFRESH_FAILED"


async def test_checkouts_seconds_apart_share_one_refreshed_token(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Worker A checks out a token with 5 min 6 s left, worker B 8 s later: A's checkout
    refreshes (no window was open), B's gets the same new token, and GitHub keeps
    accepting A's token."""
    await store_live_token(gql, fake_github, clock(), expires_in=5 * MINUTE + timedelta(seconds=6))

    first = await checkout_for(gql, 600)
    clock.advance(timedelta(seconds=8))
    second = await checkout_for(gql, 600)

    assert (first["refreshed"], second["refreshed"]) == (True, False)
    assert second["accessToken"] == first["accessToken"]
    assert fake_github.is_access_token_valid(first["accessToken"])
    assert fake_github.calls["refresh"] == 1
    assert until(first) == clock() - timedelta(seconds=8) + timedelta(seconds=600)


async def test_an_open_window_defers_the_refresh_until_it_ends(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure a checkout that would refresh early (under 2 h left) hands out the held
    token instead while a window is open on it, and that once every window has ended the
    next checkout refreshes and gets a full window."""
    await store_live_token(gql, fake_github, clock(), expires_in=2 * HOUR + 30 * MINUTE)
    holder = await checkout_for(gql, 3600)
    clock.advance(40 * MINUTE)

    during = await checkout_for(gql, 600)

    assert (holder["refreshed"], during["refreshed"]) == (False, False)
    assert during["accessToken"] == holder["accessToken"]
    assert until(during) == clock() + 10 * MINUTE
    assert fake_github.calls["refresh"] == 0

    clock.advance(20 * MINUTE + timedelta(seconds=1))
    after = await checkout_for(gql, 600)

    assert after["refreshed"] is True
    assert after["accessToken"] != holder["accessToken"]
    assert until(after) == clock() + 10 * MINUTE
    assert after["credentialVersion"] == holder["credentialVersion"] + 1
    for result in (holder, during, after):
        assert_kept_its_promise(fake_github, result)
    assert not fake_github.is_access_token_valid(holder["accessToken"])


async def test_a_window_open_on_a_token_due_for_refresh_gets_what_it_can_still_promise(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure that while windows keep a token from being refreshed, a checkout gets the
    token until its expiry minus the margin, shorter than it asked, rather than a refresh
    that would break the windows; and a full window after them."""
    expires_at = clock() + 2 * HOUR + 5 * MINUTE
    await store_live_token(gql, fake_github, clock(), expires_in=expires_at - clock())
    handed = [await checkout_for(gql, 3600)]
    clock.advance(50 * MINUTE)
    handed.append(await checkout_for(gql, 3600))
    clock.advance(40 * MINUTE)

    short = await checkout_for(gql, 3600)

    assert short["accessToken"] == handed[0]["accessToken"]
    assert until(short) == expires_at - leases.EXPIRY_MARGIN
    assert until(short) < clock() + HOUR
    assert fake_github.calls["refresh"] == 0

    clock.advance(until(short) - clock() + timedelta(seconds=1))
    full = await checkout_for(gql, 3600)

    assert full["refreshed"] is True
    assert until(full) == clock() + HOUR
    for result in (*handed, short, full):
        assert_kept_its_promise(fake_github, result)


async def test_github_down_during_an_early_refresh_hands_out_the_current_token(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub
) -> None:
    """Make sure an early refresh GitHub cannot do does not fail a checkout the current
    token can serve, and that this process waits a minute before asking GitHub again."""
    stored, _ = await store_live_token(gql, fake_github, clock(), expires_in=HOUR)
    fake_github.fail_with_status = 502

    first = await checkout_for(gql, 10)
    clock.advance(timedelta(seconds=20))
    within_a_minute = await checkout_for(gql, 10)
    asked_within_a_minute = fake_github.calls["refresh"]
    clock.advance(MINUTE)
    a_minute_later = await checkout_for(gql, 10)

    assert [first["accessToken"], within_a_minute["accessToken"]] == [stored, stored]
    assert a_minute_later["accessToken"] == stored
    assert (first["refreshed"], until(within_a_minute)) == (
        False,
        clock() - MINUTE + timedelta(seconds=10),
    )
    assert asked_within_a_minute == 1
    assert fake_github.calls["refresh"] == 2

    fake_github.fail_with_status = None
    clock.advance(MINUTE + timedelta(seconds=1))
    recovered = await checkout_for(gql, 10)

    assert recovered["refreshed"] is True
    assert fake_github.calls["refresh"] == 3


async def test_a_store_or_a_revocation_ends_the_windows_with_their_version(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, database: Database
) -> None:
    """Make sure a new version starts with no window: the tokens stored replace the held
    one on purpose, and a revocation ends every window."""
    await store_live_token(gql, fake_github, clock(), expires_in=8 * HOUR)
    await checkout_for(gql, 600)
    assert (await token_row(database))["leased_until"] is not None

    await store_live_token(gql, fake_github, clock(), expires_in=8 * HOUR)
    assert (await token_row(database))["leased_until"] is None
    await checkout_for(gql, 600)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)

    row = await token_row(database)
    assert (row["leased_until"], row["revocation_reason"]) == (None, "user_revoked")


# ---------------------------------------------------------------- the sweep


async def test_the_sweep_leaves_a_held_token_alone_until_its_window_ends(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    settings: Settings,
    github: dict[AppType, GitHubAccess],
) -> None:
    """Make sure `refresh-due --within 400` (every token due) refreshes the token nobody
    holds, skips the one a checkout handed out a second ago, and refreshes it once its
    window has ended."""
    await store_live_token(gql, fake_github, clock(), expires_in=8 * HOUR)
    await store_live_token(
        gql, fake_github, clock(), expires_in=8 * HOUR, user_id="bob", github_id="4242"
    )
    held = await checkout_for(gql, 600)
    clock.advance(timedelta(seconds=1))

    async def sweep_now() -> Any:
        return await sweep(
            now=clock(),
            keyring=settings.keyring,
            github_for=github,
            locks=KeyedLocks(),
            within=timedelta(days=400),
            jitter_seconds=0,
        )

    first = await sweep_now()

    assert (first.due, first.refreshed) == (1, 1)
    assert fake_github.is_access_token_valid(held["accessToken"])
    clock.advance(until(held) - clock() + timedelta(seconds=1))
    second = await sweep_now()
    assert (second.due, second.refreshed) == (2, 2)
    assert_kept_its_promise(fake_github, held)
    assert not fake_github.is_access_token_valid(held["accessToken"])


# ---------------------------------------------------------------- the proxy's hold


async def test_a_held_lease_protects_the_token_like_a_checkout_without_auditing_one(
    gql: GraphQLClient,
    clock: MovableClock,
    fake_github: FakeGitHub,
    settings: Settings,
    github: dict[AppType, GitHubAccess],
) -> None:
    """Make sure hold_lease returns the token and its window, keeps checkouts from
    refreshing it meanwhile, writes no TOKEN_CHECKED_OUT, and refuses 0 seconds."""
    await store_live_token(gql, fake_github, clock(), expires_in=HOUR)
    # GitHub grants an hour here, so even the refreshed token is one a checkout would
    # refresh early if no window held it.
    fake_github.access_token_expires_in = 3600
    locks = KeyedLocks()

    async def hold(seconds: int) -> checkout.CheckedOutToken:
        held = await checkout.hold_lease(
            None,
            "alice",
            AppType.STANDARD,
            seconds=seconds,
            now=clock(),
            keyring=settings.keyring,
            github=github[AppType.STANDARD],
            locks=locks,
        )
        assert isinstance(held, checkout.CheckedOutToken)
        return held

    first = await hold(120)
    clock.advance(MINUTE)
    renewed = await hold(120)
    during = await checkout_for(gql, 600)

    assert first.refreshed is True  # under 2 h left and nobody held it: refreshed early
    assert first.usable_until == clock() - MINUTE + 2 * MINUTE
    assert renewed.usable_until == clock() + 2 * MINUTE
    assert (renewed.access_token, renewed.refreshed) == (first.access_token, False)
    assert (during["accessToken"], during["refreshed"]) == (first.access_token, False)
    assert fake_github.calls["refresh"] == 1
    checked_out = await AuditEvent.count().where(AuditEvent.action == "token_checked_out")
    assert checked_out == 1
    with pytest.raises(InvalidInput) as refused:
        await hold(0)
    assert refused.value.field == "seconds"
    events = (
        await gql.data(
            "{ auditEvents(action: TOKEN_REFRESHED) { edges { node { detail } } } }", auth=ADMIN
        )
    )["auditEvents"]["edges"]
    assert ['"reason": "lease"' in edge["node"]["detail"] for edge in events] == [True]
