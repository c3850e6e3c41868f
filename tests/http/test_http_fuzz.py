"""Malformed HTTP to every route: bytes, headers and JSON shapes, not only valid documents.

Whatever arrives, the answer is below 500, no line is logged at ERROR, and no
secret (the caller's JWT, the webhook secret, anything token-shaped) comes
back. GHVAULT_HTTP_FUZZ_EXAMPLES sets the examples per route and engine.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from server.domain.webhook import sign
from tests.fake_github import FakeGitHub
from tests.helpers import (
    ADMIN,
    SECRET_PATTERN,
    WEBHOOK_SECRET,
    GraphQLClient,
    MovableClock,
    issue_capability,
    store_live_token,
)

EXAMPLES = int(os.environ.get("GHVAULT_HTTP_FUZZ_EXAMPLES", "120"))
REQUEST_TIMEOUT_SECONDS = 30

# Header values aiohttp will send: no CR, LF or NUL; Latin-1 and beyond included.
HEADER_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), max_codepoint=0x2FFF), max_size=80
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
DOCUMENTS = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "{ viewer { id } }",
            "{ viewer { " + "id " * 300 + "} }",
            "{ __typename " + "@aa " * 100 + "}",
            "query($x: Int!) { auditEvents(first: $x) { edges { cursor } } }",
            "{ viewer " + "{ ... on Viewer " * 250 + "{ id }" + " }" * 250 + " }",
            'mutation { purgeUser(userId: "\\u0000") { __typename } }',
        ]
    ),
)


def _nested(depth: int) -> bytes:
    return (
        b'{"query": "{ viewer { id } }", "variables": {"v": ' + b"[" * depth + b"]" * depth + b"}}"
    )


GRAPHQL_BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {"query": DOCUMENTS},
        optional={
            "variables": JSON_VALUES,
            "operationName": JSON_VALUES,
            "extensions": JSON_VALUES,
        },
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=30, max_value=3000).map(_nested),
    st.sampled_from([b"\xff\xfe{}", b'{"query": "\xc3\x28"}', b"[" * 4000, b"9" * 6000]),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/graphql",
        ]
    ),
    HEADER_TEXT,
)
AUTHORIZATIONS = st.one_of(
    st.just(ADMIN),
    st.none(),
    HEADER_TEXT,
    HEADER_TEXT.map(lambda text: "Bearer " + text),
)


@dataclass
class Probe:
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


@st.composite
def graphql_probes(draw: st.DrawFn) -> Probe:
    headers = {"Content-Type": draw(CONTENT_TYPES)}
    authorization = draw(AUTHORIZATIONS)
    if authorization is not None:
        headers["Authorization"] = authorization
    return Probe("/graphql", draw(GRAPHQL_BODIES), headers)


WEBHOOK_BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {"action": st.sampled_from(["revoked", "created"]) | JSON_VALUES},
        optional={"sender": st.fixed_dictionaries({}, optional={"id": JSON_VALUES}) | JSON_VALUES},
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=30, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@st.composite
def webhook_probes(draw: st.DrawFn) -> Probe:
    body = draw(WEBHOOK_BODIES)
    signature = draw(
        st.one_of(
            st.just(sign(WEBHOOK_SECRET.encode(), body)),
            st.just("sha256=" + "é" * 64),
            HEADER_TEXT,
        )
    )
    headers = {
        "X-Hub-Signature-256": signature,
        "X-GitHub-Event": draw(st.sampled_from(["github_app_authorization", "push"]) | HEADER_TEXT),
        "X-GitHub-Delivery": draw(st.just(str(uuid.uuid4())) | HEADER_TEXT),
    }
    return Probe("/webhooks/github", body, headers)


# What a request target may hold on the wire: printable ASCII but the space, "#" and "?",
# and pieces the proxy must judge as a whole.
PATH_TEXT = st.lists(
    st.sampled_from([chr(code) for code in range(0x21, 0x7F) if chr(code) not in "#?"])
    | st.sampled_from(
        ["%2e", "%2F", "%5c", "%00", "%ff", "%zz", "/..", ".git", "/info/refs", "/git-receive-pack"]
    ),
    max_size=30,
).map("".join)
PROXY_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "PROPFIND"])


@st.composite
def proxy_probes(draw: st.DrawFn, capability: str) -> Probe:
    """Requests to the GitHub proxy: any path below it, method, query and credentials."""
    path = draw(st.sampled_from(["/github/api", "/github/git", "/github/gitx"])) + draw(PATH_TEXT)
    if draw(st.booleans()):
        path += "?" + draw(st.just("service=git-upload-pack") | PATH_TEXT)
    authorization = draw(
        st.one_of(
            st.none(),
            st.just(f"Bearer {capability}"),
            HEADER_TEXT.map(lambda text: "Bearer ghvcap_" + text),
            HEADER_TEXT.map(lambda text: "Basic " + text),
            HEADER_TEXT,
        )
    )
    headers = {"Authorization": authorization} if authorization is not None else {}
    return Probe(path, draw(st.binary(max_size=100)), headers, draw(PROXY_METHODS))


def _check(probe: Probe, status: int, text: str) -> None:
    context = f"{probe.path} {probe.headers!r} {probe.body[:300]!r}\n-> {status} {text[:500]}"
    assert status < 500, context
    assert ADMIN.split(" ", 1)[1] not in text, context
    assert WEBHOOK_SECRET not in text, context
    assert SECRET_PATTERN.findall(text) == [], context


async def _fuzz(gql: GraphQLClient, probes: st.SearchStrategy[Probe]) -> int:
    loop = asyncio.get_running_loop()
    sent = 0

    async def send(probe: Probe) -> tuple[int, str]:
        response = await gql.http.request(
            probe.method, URL(probe.path, encoded=True), data=probe.body, headers=probe.headers
        )
        return response.status, (await response.read()).decode("utf-8", "replace")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(probe=probes)
    def every_probe_gets_a_sound_answer(probe: Probe) -> None:
        nonlocal sent
        future = asyncio.run_coroutine_threadsafe(send(probe), loop)
        status, text = future.result(timeout=REQUEST_TIMEOUT_SECONDS)
        sent += 1
        _check(probe, status, text)

    # Hypothesis drives the examples from a worker thread; the requests run on this loop.
    await asyncio.to_thread(every_probe_gets_a_sound_answer)
    return sent


def _error_lines(log: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]


async def test_malformed_graphql_requests_get_4xx_and_no_error_log(
    gql: GraphQLClient, log_output: io.StringIO
) -> None:
    """Make sure no bytes, headers or JSON shape sent to /graphql gives a 5xx or an ERROR line."""
    sent = await _fuzz(gql, graphql_probes())
    assert sent >= min(EXAMPLES, 10)
    assert _error_lines(log_output.getvalue()) == []


async def test_malformed_webhook_deliveries_get_4xx_and_no_error_log(
    gql: GraphQLClient, log_output: io.StringIO
) -> None:
    """The same for /webhooks/github, with correctly signed bodies half of the time."""
    sent = await _fuzz(gql, webhook_probes())
    assert sent >= min(EXAMPLES, 10)
    assert _error_lines(log_output.getvalue()) == []


async def test_malformed_proxy_requests_get_4xx_and_no_error_log(
    gql: GraphQLClient, clock: MovableClock, fake_github: FakeGitHub, log_output: io.StringIO
) -> None:
    """The same for /github/api and /github/git, with a live capability some of the time."""
    await store_live_token(gql, fake_github, clock())
    capability = await issue_capability(gql, access="WRITE")
    sent = await _fuzz(gql, proxy_probes(capability))
    assert sent >= min(EXAMPLES, 10)
    assert _error_lines(log_output.getvalue()) == []


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"[]",
        b"[1]",
        b'"{ viewer { id } }"',
        b"1",
        b"true",
        b'{"query": 1}',
        b'{"query": null}',
        b'{"query": "{ viewer { id } }", "variables": [1]}',
        b'{"query": "{ viewer { id } }", "variables": "x"}',
        b'{"query": "{ viewer { id } }", "operationName": 1}',
        b'{"query": "{ viewer { id } }", "extensions": 1}',
    ],
)
async def test_a_body_that_is_not_a_graphql_request_object_gets_a_400(
    gql: GraphQLClient, log_output: io.StringIO, body: bytes
) -> None:
    """Make sure JSON of the wrong shape is refused as the client's mistake, saying so."""
    response = await gql.http.post(
        "/graphql",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": ADMIN},
    )
    assert response.status == 400, await response.text()
    assert _error_lines(log_output.getvalue()) == []
