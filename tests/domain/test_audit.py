"""The audit log: one event per change, ids and facts only."""

from __future__ import annotations

import json

from server.domain import audit
from tests.helpers import (
    ADMIN,
    ALICE,
    PURGE,
    REVOKE,
    SECRET_PATTERN,
    SERVICE,
    STORE,
    Database,
    GraphQLClient,
    MovableClock,
    access_token,
    error_codes,
    refresh_token,
    store_input,
)

EVENTS = """query($userId: ID, $action: AuditAction, $first: Int!, $after: String) {
  auditEvents(userId: $userId, action: $action, first: $first, after: $after) {
    edges { cursor node { id occurredAt action actorRole actorId subjectUserId appType detail } }
    pageInfo { hasNextPage endCursor }
  }
}"""

PII = {
    "email": "alice.audit@example.org",
    "displayName": "Alice Auditable",
    "githubLogin": "alice-audit-gh",
    "githubEmail": "alice.audit.gh@example.net",
}


async def _events(gql: GraphQLClient, **variables: object) -> list[dict]:
    variables.setdefault("first", 100)
    result = await gql.data(EVENTS, variables, auth=ADMIN)
    return [edge["node"] for edge in result["auditEvents"]["edges"]]


async def test_store_revoke_and_purge_each_write_one_event(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Three changes, three events, newest first, with actor and subject ids."""
    tokens = (access_token(), refresh_token())
    variables = store_input("alice", now=clock(), access=tokens[0], refresh=tokens[1], **PII)
    await gql.data(STORE, variables, auth=SERVICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    await gql.data(PURGE, {"userId": "alice"}, auth=ADMIN)

    events = await _events(gql, userId="alice")

    assert [(e["action"], e["actorRole"], e["actorId"]) for e in events] == [
        ("USER_PURGED", "ADMIN", "root"),
        ("TOKEN_REVOKED", "USER", "alice"),
        ("TOKEN_STORED", "SERVICE", "commit-worker"),
    ]
    assert {e["subjectUserId"] for e in events} == {"alice"}
    details = [json.loads(e["detail"]) for e in events]
    # The revoked token had nothing left to revoke at GitHub.
    assert details[0] == {
        "already_purged": False,
        "deleted_tokens": 1,
        "github": {"standard": "no_token"},
    }
    assert details[1] == {"already_revoked": False, "reason": "user_revoked"}
    assert details[2]["credential_version"] == 1
    rows = await database.fetch("SELECT * FROM audit_events")
    assert len(rows) == 3
    stored = json.dumps(rows, default=str)
    for value in (*PII.values(), *tokens, *(token[4:] for token in tokens)):
        assert value not in stored
    assert not SECRET_PATTERN.search(stored)


async def test_events_filter_by_action_and_page_by_cursor(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """auditEvents pages newest first through `after`, and filters by action."""
    for index in range(5):
        variables = store_input(f"user{index}", now=clock(), github_user_id=str(9000 + index))
        await gql.data(STORE, variables, auth=SERVICE)
    await gql.data(REVOKE, {"input": {"userId": "user0"}}, auth=ADMIN)

    seen: list[str] = []
    after = None
    while True:
        page = (
            await gql.data(
                EVENTS, {"action": "TOKEN_STORED", "first": 2, "after": after}, auth=ADMIN
            )
        )["auditEvents"]
        seen += [edge["node"]["subjectUserId"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    assert seen == ["user4", "user3", "user2", "user1", "user0"]
    revoked = await _events(gql, action="TOKEN_REVOKED")
    assert [(e["subjectUserId"], e["actorRole"]) for e in revoked] == [("user0", "ADMIN")]


async def test_a_change_whose_audit_event_fails_is_not_kept(
    gql: GraphQLClient, clock: MovableClock, database: Database, monkeypatch
) -> None:
    """The write and its audit event commit together, or neither does."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)

    async def broken_record(*args: object, **kwargs: object) -> None:
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit, "record", broken_record)

    revoke = await gql.post(REVOKE, {"input": {}}, auth=ALICE)
    store = await gql.post(STORE, store_input("bob", now=clock(), github_user_id="2"), auth=SERVICE)

    assert error_codes(revoke) == ["INTERNAL"]
    assert error_codes(store) == ["INTERNAL"]
    rows = await database.fetch("SELECT user_id, revoked_at FROM user_github_app_tokens")
    assert rows == [{"user_id": "alice", "revoked_at": None}]
    assert await database.fetch("SELECT id FROM users WHERE id = 'bob'") == []


async def _revoke_events(gql: GraphQLClient) -> list[tuple[str, bool]]:
    """(actor id, already revoked) of alice's TOKEN_REVOKED events, newest first."""
    events = await _events(gql, userId="alice", action="TOKEN_REVOKED")
    return [(e["actorId"], json.loads(e["detail"])["already_revoked"]) for e in events]


async def test_repeated_no_op_revokes_are_recorded_once(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Revoking a revoked token again and again answers alreadyRevoked each time, but only
    the first try of each actor is recorded until the token changes: a user cannot grow
    the log by asking."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    await gql.data(STORE, store_input("alice", now=clock(), app_type="LITE"), auth=SERVICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    await gql.data(REVOKE, {"input": {"appType": "LITE"}}, auth=ALICE)
    count_before = len(await database.fetch("SELECT id FROM audit_events"))

    for _ in range(20):
        for app_type in ("STANDARD", "LITE"):
            again = await gql.data(REVOKE, {"input": {"appType": app_type}}, auth=ALICE)
            assert again["revokeToken"]["alreadyRevoked"] is True
        await gql.data(REVOKE, {"input": {"userId": "alice"}}, auth=ADMIN)

    # One no-op per app type for alice, one for the admin.
    assert len(await database.fetch("SELECT id FROM audit_events")) == count_before + 3
    assert (await _revoke_events(gql))[:3] == [("root", True), ("alice", True), ("alice", True)]


async def test_a_no_op_revoke_after_a_change_is_recorded_again(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Once the token was stored (and revoked) anew, a no-op revoke is news again."""
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    await gql.data(STORE, store_input("alice", now=clock()), auth=SERVICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)
    await gql.data(REVOKE, {"input": {}}, auth=ALICE)

    assert await _revoke_events(gql) == [
        ("alice", True),
        ("alice", False),
        ("alice", True),
        ("alice", False),
    ]
