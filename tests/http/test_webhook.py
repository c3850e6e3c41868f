"""POST /webhooks/github: signed deliveries revoke grants, once, and nothing else gets in."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any, Literal

from server.domain.enums import AppType
from server.domain.webhook import sign, verify_signature
from server.http.routes import MAX_BODY_BYTES
from tests.helpers import (
    ADMIN,
    ALICE,
    BOB,
    SECRET_PATTERN,
    SERVICE,
    STORE,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET_LITE,
    Database,
    GraphQLClient,
    MovableClock,
    store_input,
)

ALICE_GITHUB_ID = 7201
BOB_GITHUB_ID = 7202

STATUSES = """{ viewer { githubTokens { appType state revocationReason } } }"""

EVENTS = """query($userId: ID) {
  auditEvents(userId: $userId, action: GITHUB_WEBHOOK_REVOKED, first: 100) {
    edges { node { action actorRole actorId subjectUserId appType detail } }
  }
}"""


def revoked_payload(github_user_id: int = ALICE_GITHUB_ID, login: str = "alice-gh") -> bytes:
    return json.dumps(
        {"action": "revoked", "sender": {"id": github_user_id, "login": login, "type": "User"}}
    ).encode()


async def deliver(
    gql: GraphQLClient,
    body: bytes,
    *,
    secret: str | None = WEBHOOK_SECRET,
    event: str | None = "github_app_authorization",
    delivery: str | Literal[False] | None = None,
    signature: str | None = None,
) -> tuple[int, str]:
    """POST one delivery as GitHub would; returns (status, body text)."""
    headers = {"Content-Type": "application/json"}
    if signature is None and secret is not None:
        signature = sign(secret.encode(), body)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    if event is not None:
        headers["X-GitHub-Event"] = event
    if delivery is not False:
        headers["X-GitHub-Delivery"] = delivery or str(uuid.uuid4())
    response = await gql.http.post("/webhooks/github", data=io.BytesIO(body), headers=headers)
    text = await response.text()
    assert not SECRET_PATTERN.search(text), text
    return response.status, text


async def store(
    gql: GraphQLClient,
    clock: MovableClock,
    user_id: str,
    github_user_id: int,
    *,
    app_type: str = "STANDARD",
) -> None:
    variables = store_input(
        user_id,
        now=clock(),
        app_type=app_type,
        github_user_id=str(github_user_id),
        github_login=f"{user_id}-gh",
    )
    stored = (await gql.data(STORE, variables, auth=SERVICE))["storeGithubToken"]
    assert stored["token"]["state"] == "ACTIVE", stored


async def store_everyone(gql: GraphQLClient, clock: MovableClock) -> None:
    """Alice with both apps, bob with the standard one."""
    await store(gql, clock, "alice", ALICE_GITHUB_ID)
    await store(gql, clock, "alice", ALICE_GITHUB_ID, app_type="LITE")
    await store(gql, clock, "bob", BOB_GITHUB_ID)


async def statuses(gql: GraphQLClient, auth: str) -> dict[str, tuple[str, str | None]]:
    tokens = (await gql.data(STATUSES, auth=auth))["viewer"]["githubTokens"]
    return {token["appType"]: (token["state"], token["revocationReason"]) for token in tokens}


ALL_ACTIVE = {"STANDARD": ("ACTIVE", None), "LITE": ("ACTIVE", None)}
BOB_ACTIVE = {"STANDARD": ("ACTIVE", None), "LITE": ("NOT_CONNECTED", None)}


async def webhook_events(gql: GraphQLClient) -> list[dict[str, Any]]:
    result = await gql.data(EVENTS, auth=ADMIN)
    return [edge["node"] for edge in result["auditEvents"]["edges"]]


async def assert_nothing_changed(gql: GraphQLClient, database: Database) -> None:
    assert await statuses(gql, ALICE) == ALL_ACTIVE
    assert await statuses(gql, BOB) == BOB_ACTIVE
    assert await webhook_events(gql) == []
    assert await database.fetch("SELECT delivery_id FROM github_webhook_deliveries") == []


def test_signatures_match_githubs_documented_test_vector() -> None:
    """Make sure signing and verifying agree with the example in GitHub's documentation."""
    secret = b"It's a Secret to Everybody"
    body = b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

    assert sign(secret, body) == expected
    assert verify_signature(expected, body, {AppType.STANDARD: secret}) is AppType.STANDARD
    both = {AppType.STANDARD: b"another secret", AppType.LITE: secret}
    assert verify_signature(expected, body, both) is AppType.LITE
    assert verify_signature(expected, b"Hello, World?", both) is None
    assert verify_signature(expected.removeprefix("sha256="), body, both) is None
    assert verify_signature(expected.upper(), body, both) is None
    assert verify_signature(None, body, both) is None


async def test_a_standard_revocation_revokes_only_that_users_standard_token(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure a revocation signed by the standard app revokes alice's standard token only."""
    await store_everyone(gql, clock)
    delivery = str(uuid.uuid4())

    status, text = await deliver(gql, revoked_payload(), delivery=delivery)

    assert status == 200
    assert json.loads(text) == {"status": "ok", "revoked": 1}
    assert await statuses(gql, ALICE) == {
        "STANDARD": ("REVOKED", "USER_REVOKED"),
        "LITE": ("ACTIVE", None),
    }
    assert await statuses(gql, BOB) == BOB_ACTIVE
    events = await webhook_events(gql)
    assert len(events) == 1
    event = events[0]
    assert (event["subjectUserId"], event["appType"], event["actorRole"]) == (
        "alice",
        "STANDARD",
        None,
    )
    assert json.loads(event["detail"]) == {"delivery_id": delivery, "reason": "user_revoked"}
    rows = await database.fetch(
        "SELECT access_token_encrypted, refresh_token_encrypted FROM user_github_app_tokens"
        " WHERE user_id = 'alice' AND github_app_type = 'standard'"
    )
    assert [(row["access_token_encrypted"], row["refresh_token_encrypted"]) for row in rows] == [
        (None, None)
    ]


async def test_a_lite_revocation_revokes_only_the_lite_token(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure the lite app's secret says the delivery is about the LITE token."""
    await store_everyone(gql, clock)

    status, text = await deliver(gql, revoked_payload(), secret=WEBHOOK_SECRET_LITE)

    assert (status, json.loads(text)) == (200, {"status": "ok", "revoked": 1})
    assert await statuses(gql, ALICE) == {
        "STANDARD": ("ACTIVE", None),
        "LITE": ("REVOKED", "USER_REVOKED"),
    }
    assert await statuses(gql, BOB) == BOB_ACTIVE
    assert [event["appType"] for event in await webhook_events(gql)] == ["LITE"]


async def test_a_revocation_for_an_unknown_github_account_changes_nothing(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure a sender ghvault holds no token for is acknowledged and revokes nothing."""
    await store_everyone(gql, clock)

    status, text = await deliver(gql, revoked_payload(github_user_id=9999999, login="stranger"))

    assert (status, json.loads(text)) == (200, {"status": "ok", "revoked": 0})
    assert await statuses(gql, ALICE) == ALL_ACTIVE
    assert await statuses(gql, BOB) == BOB_ACTIVE
    assert await webhook_events(gql) == []


async def test_a_replayed_delivery_changes_nothing(gql: GraphQLClient, clock: MovableClock) -> None:
    """Make sure a delivery id seen before does not revoke the token stored since."""
    await store(gql, clock, "alice", ALICE_GITHUB_ID)
    delivery = str(uuid.uuid4())
    first = await deliver(gql, revoked_payload(), delivery=delivery)
    assert first[0] == 200
    assert (await statuses(gql, ALICE))["STANDARD"] == ("REVOKED", "USER_REVOKED")
    await store(gql, clock, "alice", ALICE_GITHUB_ID)

    status, text = await deliver(gql, revoked_payload(), delivery=delivery)

    assert (status, json.loads(text)) == (200, {"status": "duplicate", "revoked": 0})
    assert (await statuses(gql, ALICE))["STANDARD"] == ("ACTIVE", None)
    assert len(await webhook_events(gql)) == 1


async def test_a_wrong_or_missing_signature_is_refused(
    gql: GraphQLClient, clock: MovableClock, database: Database, log_output: io.StringIO
) -> None:
    """Make sure only a body signed with a configured secret gets in: 401 otherwise."""
    await store_everyone(gql, clock)
    body = revoked_payload()
    signed_other_body = sign(WEBHOOK_SECRET.encode(), revoked_payload(login="someone-else"))

    for signature in (
        sign(b"not-the-webhook-secret", body),
        signed_other_body,
        sign(WEBHOOK_SECRET.encode(), body).removeprefix("sha256="),
        "",
    ):
        status, text = await deliver(gql, body, signature=signature)

        assert (status, json.loads(text)) == (401, {"error": "signature missing or wrong"})
    status, _ = await deliver(gql, body, secret=None)
    assert status == 401
    await assert_nothing_changed(gql, database)
    assert log_output.getvalue().count("webhook signature missing or wrong") == 5


async def test_a_signed_body_that_is_not_a_json_object_is_a_bad_request(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure malformed JSON, a JSON array and a revocation without sender are 400."""
    await store_everyone(gql, clock)

    for body in (b'{"action": "revoked", "sender": {', b"[1, 2]", b'{"action": "revoked"}'):
        status, _ = await deliver(gql, body)

        assert status == 400, body
    await assert_nothing_changed(gql, database)


async def test_a_delivery_without_its_github_headers_is_a_bad_request(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure a signed delivery missing X-GitHub-Delivery or X-GitHub-Event is 400."""
    await store_everyone(gql, clock)

    missing_delivery = await deliver(gql, revoked_payload(), delivery=False)
    missing_event = await deliver(gql, revoked_payload(), event=None)

    assert missing_delivery[0] == 400
    assert missing_event[0] == 400
    await assert_nothing_changed(gql, database)


async def test_events_ghvault_does_not_act_on_are_acknowledged_and_ignored(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure a push, or an authorization event that is not a revocation, is a 204 no-op."""
    await store_everyone(gql, clock)
    granted = json.dumps({"action": "created", "sender": {"id": ALICE_GITHUB_ID}}).encode()

    push = await deliver(gql, revoked_payload(), event="push")
    other_action = await deliver(gql, granted)

    assert push == (204, "")
    assert other_action == (204, "")
    await assert_nothing_changed(gql, database)


async def test_a_body_over_one_mebibyte_is_too_large(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure an oversized delivery is 413, even when correctly signed."""
    await store_everyone(gql, clock)
    body = revoked_payload()[:-1] + b', "padding": "' + b"x" * MAX_BODY_BYTES + b'"}'

    status, text = await deliver(gql, body)

    assert (status, json.loads(text)) == (413, {"error": "body too large"})
    await assert_nothing_changed(gql, database)


def _headers(body: bytes) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": sign(WEBHOOK_SECRET.encode(), body),
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
    }


async def test_a_large_delivery_is_verified_over_every_byte(gql: GraphQLClient) -> None:
    """Make sure a half-mebibyte body arriving in pieces is read whole before verifying."""
    body = json.dumps({"padding": "x" * (MAX_BODY_BYTES // 2)}).encode()

    response = await gql.http.post(
        "/webhooks/github", data=io.BytesIO(body), headers=_headers(body)
    )

    assert response.status == 204


async def test_a_chunked_body_over_the_cap_is_too_large(gql: GraphQLClient) -> None:
    """Without a Content-Length the cap still holds: 413, not a signature failure."""
    body = json.dumps({"padding": "x" * MAX_BODY_BYTES}).encode()

    async def chunks() -> Any:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    response = await gql.http.post("/webhooks/github", data=chunks(), headers=_headers(body))

    assert response.status == 413


async def test_a_signed_body_replayed_under_a_new_delivery_id_changes_nothing(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Make sure a captured revocation cannot revoke the user again after they reconnect.

    The signature covers the body, not X-GitHub-Delivery, so anyone holding one
    signed body could otherwise replay it under ids of their choosing.
    """
    await store(gql, clock, "alice", ALICE_GITHUB_ID)
    captured = revoked_payload()
    first = await deliver(gql, captured, delivery=str(uuid.uuid4()))
    assert (first[0], json.loads(first[1])) == (200, {"status": "ok", "revoked": 1})
    await store(gql, clock, "alice", ALICE_GITHUB_ID)

    for _ in range(3):
        status, text = await deliver(gql, captured, delivery=str(uuid.uuid4()))

        assert (status, json.loads(text)) == (200, {"status": "duplicate", "revoked": 0})
    assert (await statuses(gql, ALICE))["STANDARD"] == ("ACTIVE", None)
    assert len(await webhook_events(gql)) == 1


async def test_another_signed_body_for_the_same_user_still_revokes(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Replay protection is per body: a different revocation (other fields) is acted on."""
    await store(gql, clock, "alice", ALICE_GITHUB_ID)
    await deliver(gql, revoked_payload())
    await store(gql, clock, "alice", ALICE_GITHUB_ID)

    status, text = await deliver(gql, revoked_payload(login="alice-renamed"))

    assert (status, json.loads(text)) == (200, {"status": "ok", "revoked": 1})
    assert (await statuses(gql, ALICE))["STANDARD"] == ("REVOKED", "USER_REVOKED")


async def test_a_revocation_finds_a_github_id_stored_with_leading_zeros(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure "07201" is stored as GitHub's 7201, so GitHub's webhook for 7201 revokes it."""
    variables = store_input(
        "alice", now=clock(), github_user_id=f"000{ALICE_GITHUB_ID}", github_login="alice-gh"
    )
    await gql.data(STORE, variables, auth=SERVICE)
    rows = await database.fetch("SELECT github_user_id FROM user_github_app_tokens")
    assert rows == [{"github_user_id": str(ALICE_GITHUB_ID)}]

    status, text = await deliver(gql, revoked_payload())

    assert (status, json.loads(text)) == (200, {"status": "ok", "revoked": 1})
    assert (await statuses(gql, ALICE))["STANDARD"] == ("REVOKED", "USER_REVOKED")


async def test_a_sender_id_spelled_with_leading_zeros_is_the_same_account(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    await store(gql, clock, "alice", ALICE_GITHUB_ID)
    body = json.dumps({"action": "revoked", "sender": {"id": f"0{ALICE_GITHUB_ID}"}}).encode()

    status, text = await deliver(gql, body)

    assert (status, json.loads(text)) == (200, {"status": "ok", "revoked": 1})


async def test_malformed_signature_headers_and_bodies_are_4xx(
    gql: GraphQLClient, clock: MovableClock, database: Database
) -> None:
    """Make sure a non-ASCII signature is a 401 and a deeply nested signed body a 400, not 500."""
    await store_everyone(gql, clock)
    body = revoked_payload()
    headers = {
        "X-GitHub-Event": "github_app_authorization",
        "X-GitHub-Delivery": str(uuid.uuid4()),
    }
    for signature in ("sha256=" + "é" * 64, "sha256=" + "\u0661" * 64):
        response = await gql.http.post(
            "/webhooks/github",
            data=body,
            headers={**headers, "X-Hub-Signature-256": signature.encode().decode("latin-1")},
        )
        assert response.status == 401

    nested = b'{"action": "revoked", "sender": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001
    status, _ = await deliver(gql, nested)
    assert status == 400
    await assert_nothing_changed(gql, database)


async def test_the_same_body_from_each_app_revokes_each_apps_token(
    gql: GraphQLClient, clock: MovableClock
) -> None:
    """Both apps may send byte-identical bodies; each signature makes its own delivery."""
    await store(gql, clock, "alice", ALICE_GITHUB_ID)
    await store(gql, clock, "alice", ALICE_GITHUB_ID, app_type="LITE")

    standard = await deliver(gql, revoked_payload())
    lite = await deliver(gql, revoked_payload(), secret=WEBHOOK_SECRET_LITE)

    assert json.loads(standard[1]) == json.loads(lite[1]) == {"status": "ok", "revoked": 1}
    assert await statuses(gql, ALICE) == {
        "STANDARD": ("REVOKED", "USER_REVOKED"),
        "LITE": ("REVOKED", "USER_REVOKED"),
    }
