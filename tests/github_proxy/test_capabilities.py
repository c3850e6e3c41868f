"""Capabilities: issued once as plaintext, kept as a hash, ended by every way a token ends."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest

from server.github_proxy.capabilities import SECRET_CHARS, redeem
from tests.helpers import (
    ADMIN,
    ALICE,
    ISSUE_CAPABILITY,
    PURGE,
    REVOKE,
    REVOKE_CAPABILITY,
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    error_codes,
    issue_capability,
    store_input,
)


async def _store(gql: GraphQLClient, clock: MovableClock, user_id: str = "alice") -> None:
    github_id = {"alice": "583231", "bob": "583232"}[user_id]
    variables = store_input(user_id, now=clock(), github_user_id=github_id)
    await gql.data(STORE, variables, auth=SERVICE)


async def _issue(gql: GraphQLClient, auth: str = SERVICE, **fields: Any) -> dict[str, Any]:
    variables = {"input": {"userId": "alice", **fields}}
    body = await gql.post(ISSUE_CAPABILITY, variables, auth=auth)
    if "errors" in body:
        return body
    result: dict[str, Any] = body["data"]["issueGithubCapability"]
    return result


async def _revoke(gql: GraphQLClient, capability_id: str, auth: str = SERVICE) -> dict[str, Any]:
    body = await gql.post(REVOKE_CAPABILITY, {"id": capability_id}, auth=auth)
    if "errors" in body:
        return body
    result: dict[str, Any] = body["data"]["revokeGithubCapability"]
    return result


async def test_a_capability_is_shown_once_and_stored_as_its_hash(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure the database holds the capability's SHA-256, scoped as asked, never the text."""
    await _store(gql, clock)

    result = await _issue(
        gql,
        repositories=["Octocat/Hello-World", "octocat/hello-world"],
        access="WRITE",
        ttlSeconds=600,
    )

    assert result["__typename"] == "GithubCapabilityIssued"
    capability = result["capability"]
    assert capability.startswith("ghvcap_")
    assert len(capability) == len("ghvcap_") + SECRET_CHARS
    assert result["expiresAt"] == (clock() + timedelta(seconds=600)).isoformat()
    rows = await database.fetch("SELECT * FROM github_capabilities")
    assert len(rows) == 1
    row = rows[0]
    assert row["secret_sha256"] == hashlib.sha256(capability.encode()).hexdigest()
    assert str(row["id"]) == result["id"]
    assert json.loads(row["repositories"]) == ["octocat/hello-world"]
    assert (row["access"], row["user_id"], row["issued_by"]) == ("write", "alice", "commit-worker")
    assert capability not in json.dumps([str(value) for value in row.values()])


async def test_issuing_is_audited_without_the_capability(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    await _store(gql, clock)
    result = await _issue(gql, repositories=["octocat/hello-world"])

    events = await database.fetch(
        "SELECT action, actor_id, subject_user_id, detail FROM audit_events "
        "WHERE action = 'github_capability_issued'"
    )

    assert [(e["actor_id"], e["subject_user_id"]) for e in events] == [("commit-worker", "alice")]
    detail = json.loads(events[0]["detail"])
    assert detail == {
        "capability_id": result["id"],
        "access": "read",
        "repositories": ["octocat/hello-world"],
        "ttl_seconds": 900,
    }
    assert result["capability"] not in events[0]["detail"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"ttlSeconds": 59}, "ttlSeconds"),
        ({"ttlSeconds": 3601}, "ttlSeconds"),
        ({"repositories": ["octocat"]}, "repositories"),
        ({"repositories": ["octocat/../other"]}, "repositories"),
        ({"repositories": [f"o/r{n}" for n in range(101)]}, "repositories"),
        ({"userId": ""}, "userId"),
    ],
)
async def test_out_of_range_input_is_refused_without_an_echo(
    gql: GraphQLClient, clock: MovableClock, fields: dict[str, Any], field: str
) -> None:
    """Make sure a bad TTL or repository is INVALID_INPUT naming the field, not the value."""
    await _store(gql, clock)

    result = await _issue(gql, **fields)

    assert (result["code"], result["field"]) == ("INVALID_INPUT", field)
    assert "../other" not in result["message"]


async def test_no_capability_for_a_user_without_a_live_token(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure a capability cannot stand for a token that is missing or revoked."""
    assert (await _issue(gql))["code"] == "NOT_CONNECTED"
    await _store(gql, clock)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)

    assert (await _issue(gql))["code"] == "TOKEN_REVOKED"


@pytest.mark.parametrize("auth", [ALICE, ADMIN])
async def test_only_a_service_issues_capabilities(
    gql: GraphQLClient, clock: MovableClock, database: Database, auth: str
) -> None:
    await _store(gql, clock)

    assert error_codes(await _issue(gql, auth=auth)) == ["FORBIDDEN"]
    assert await database.fetch("SELECT id FROM github_capabilities") == []


async def test_a_service_or_an_admin_revokes_and_a_user_cannot(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure revoking ends the capability at once, is idempotent and audited."""
    await _store(gql, clock)
    issued = await _issue(gql)
    assert await redeem(issued["capability"], now=clock()) is not None

    assert error_codes(await _revoke(gql, issued["id"], auth=ALICE)) == ["FORBIDDEN"]
    assert await _revoke(gql, issued["id"]) == {
        "__typename": "RevokeGithubCapabilitySuccess",
        "id": issued["id"],
        "alreadyRevoked": False,
    }
    assert await redeem(issued["capability"], now=clock()) is None
    assert (await _revoke(gql, issued["id"], auth=ADMIN))["alreadyRevoked"] is True
    events = await database.fetch(
        "SELECT actor_id FROM audit_events WHERE action = 'github_capability_revoked' ORDER BY id"
    )
    assert [event["actor_id"] for event in events] == ["commit-worker", "root"]


@pytest.mark.parametrize("capability_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
async def test_revoking_an_unknown_capability_is_not_found(
    gql: GraphQLClient, capability_id: str
) -> None:
    assert (await _revoke(gql, capability_id))["code"] == "NOT_FOUND"


async def test_a_capability_ends_at_its_expiry(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    await _store(gql, clock)
    capability = await issue_capability(gql, ttlSeconds=60)

    clock.advance(timedelta(seconds=59))
    assert await redeem(capability, now=clock()) is not None
    clock.advance(timedelta(seconds=1))
    assert await redeem(capability, now=clock()) is None


@pytest.mark.parametrize(
    "capability",
    ["", "ghvcap_", "ghvcap_" + "a" * 42, "ghvcap_" + "a" * 44, "ghvcap_" + "-" * 43, "ghu_x"],
)
async def test_malformed_capabilities_redeem_nothing(database: Database, capability: str) -> None:
    assert await redeem(capability, now=MovableClock()()) is None


async def test_revoking_the_token_ends_its_capabilities_for_good(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure a capability stays ended when the user connects again after a revocation."""
    await _store(gql, clock)
    capability = await issue_capability(gql)

    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    assert await redeem(capability, now=clock()) is None
    await _store(gql, clock)

    assert await redeem(capability, now=clock()) is None
    assert await redeem(await issue_capability(gql), now=clock()) is not None


async def test_disconnecting_deletes_the_capabilities(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    await _store(gql, clock)
    await _store(gql, clock, "bob")
    capability = await issue_capability(gql)
    await issue_capability(gql, "bob")

    result = await gql.data("mutation { disconnectGithub { __typename } }", auth=ALICE)

    assert result["disconnectGithub"]["__typename"] == "DisconnectGithubSuccess"
    assert await redeem(capability, now=clock()) is None
    rows = await database.fetch("SELECT user_id FROM github_capabilities")
    assert [row["user_id"] for row in rows] == ["bob"]


async def test_purging_deletes_capabilities_and_erases_the_repositories_they_named(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """GDPR: an owner in owner/name is often the user's login; nothing of it stays."""
    await _store(gql, clock)
    await _store(gql, clock, "bob")
    issued = await _issue(gql, repositories=["alice-gh/secret-plans"])
    await _issue(gql, repositories=["bob-gh/kept"], userId="bob")

    await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN)

    assert await redeem(issued["capability"], now=clock()) is None
    assert [
        row["user_id"] for row in await database.fetch("SELECT user_id FROM github_capabilities")
    ] == ["bob"]
    details = {
        row["subject_user_id"]: json.loads(row["detail"])
        for row in await database.fetch(
            "SELECT subject_user_id, detail FROM audit_events "
            "WHERE action = 'github_capability_issued'"
        )
    }
    assert details["alice"]["repositories"] == "[ERASED]"
    assert details["alice"]["capability_id"] == issued["id"]
    assert details["bob"]["repositories"] == ["bob-gh/kept"]
