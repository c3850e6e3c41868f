"""Principals from an identity provider: keys from its JWKS endpoint, roles from its claims.

The provider is an aiohttp server on loopback publishing an RSA and an EC
key; tests rotate its keys and take it down while ghvault runs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from server.auth import AuthenticationError, authenticate
from server.config import ConfigError, Settings
from server.domain.enums import Role
from server.jwks import (
    MAX_FAILED_FETCH_BACKOFF_SECONDS,
    REFETCHES_PER_MINUTE,
    JwksKeys,
    KeyUnavailable,
)
from tests.helpers import GraphQLClient, base_env


@dataclass
class SigningKey:
    kid: str
    private: Any
    algorithm: str

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        published = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**published, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, **overrides: Any) -> str:
        now = datetime.now(UTC)
        claims = {"sub": "alice", "role": "user", "exp": now + timedelta(minutes=5), **overrides}
        return jwt.encode(claims, self.private, self.algorithm, headers={"kid": self.kid})


class IdentityProvider:
    """A JWKS endpoint whose keys and availability the test controls."""

    def __init__(self) -> None:
        self.published: list[SigningKey] = []
        self.up = True
        self.fetches = 0
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if not self.up:
            return web.Response(status=503, text="identity provider down")
        return web.json_response({"keys": [key.jwk() for key in self.published]})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/.well-known/jwks.json"))


@pytest.fixture(scope="module")
def key_one() -> SigningKey:
    return SigningKey.rsa("key-one")


@pytest.fixture(scope="module")
def key_two() -> SigningKey:
    return SigningKey.ec("key-two")


@pytest.fixture
async def provider(aiohttp_server: Callable[..., Any], key_one: SigningKey) -> IdentityProvider:
    provider = IdentityProvider()
    provider.published = [key_one]
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", provider.handle)
    provider.server = await aiohttp_server(app)
    return provider


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwks_env(url: str, **overrides: str) -> dict[str, str]:
    env = base_env(AUTH_JWT_JWKS_URL=url, **overrides)
    del env["AUTH_JWT_SECRET"]
    return env


async def principal_of(token: str, keys: JwksKeys, settings: Settings) -> Role:
    principal = authenticate(f"Bearer {token}", settings.jwt, key=await keys.key_for(token))
    return principal.role


# --- the key set ---------------------------------------------------------------


async def test_tokens_from_every_published_key_verify_and_the_set_is_fetched_once(
    provider: IdentityProvider, key_one: SigningKey, key_two: SigningKey
) -> None:
    """Make sure both published keys (RSA and EC) verify, from one fetch of the set."""
    provider.published = [key_one, key_two]
    settings = Settings.from_env(jwks_env(provider.url))
    keys = JwksKeys(provider.url)
    for _ in range(3):
        assert await principal_of(key_one.sign(), keys, settings) is Role.USER
        assert await principal_of(key_two.sign(role="admin"), keys, settings) is Role.ADMIN
    assert provider.fetches == 1


async def test_a_rotated_key_is_picked_up_without_restart(
    provider: IdentityProvider, key_one: SigningKey, key_two: SigningKey
) -> None:
    """Make sure a newly published key verifies at once, and the retired key no longer does."""
    settings = Settings.from_env(jwks_env(provider.url))
    keys = JwksKeys(provider.url)
    assert await principal_of(key_one.sign(), keys, settings) is Role.USER

    provider.published = [key_two]
    assert await principal_of(key_two.sign(), keys, settings) is Role.USER
    assert provider.fetches == 2
    with pytest.raises(KeyUnavailable):
        await keys.key_for(key_one.sign())


async def test_a_token_signed_by_an_unpublished_key_is_refused(
    provider: IdentityProvider, key_one: SigningKey
) -> None:
    """Make sure a token whose kid claims a published key but whose signature is another's fails."""
    settings = Settings.from_env(jwks_env(provider.url))
    keys = JwksKeys(provider.url)
    impostor = SigningKey.rsa(key_one.kid)
    token = impostor.sign(role="admin")
    with pytest.raises(AuthenticationError):
        authenticate(f"Bearer {token}", settings.jwt, key=await keys.key_for(token))


async def test_an_outage_before_the_first_fetch_fails_closed(
    provider: IdentityProvider, key_one: SigningKey
) -> None:
    """Make sure no key means no principal while the provider is down."""
    provider.up = False
    keys = JwksKeys(provider.url)
    with pytest.raises(KeyUnavailable):
        await keys.key_for(key_one.sign())


async def test_keys_outlive_an_outage_only_for_their_lifespan(
    provider: IdentityProvider, key_one: SigningKey
) -> None:
    """Make sure cached keys serve through a short outage, and are dropped once expired."""
    clock = FakeMonotonic()
    keys = JwksKeys(provider.url, lifespan=300, monotonic=clock)
    await keys.key_for(key_one.sign())
    provider.up = False

    clock.now += 299
    assert (await keys.key_for(key_one.sign())).key_id == key_one.kid
    clock.now += 2
    with pytest.raises(KeyUnavailable):
        await keys.key_for(key_one.sign())

    provider.up = True
    clock.now += 60  # a fresh minute of refetch budget
    assert (await keys.key_for(key_one.sign())).key_id == key_one.kid


async def test_an_unreachable_provider_fails_closed(key_one: SigningKey) -> None:
    """Make sure a refused connection is a refused token, not an error."""
    keys = JwksKeys("http://127.0.0.1:9/jwks.json", timeout=2)
    with pytest.raises(KeyUnavailable):
        await keys.key_for(key_one.sign())


async def test_made_up_key_ids_cannot_make_ghvault_hammer_the_provider(
    provider: IdentityProvider, key_one: SigningKey
) -> None:
    """Make sure tokens with unknown kids refetch at most the per-minute budget."""
    clock = FakeMonotonic()
    keys = JwksKeys(provider.url, monotonic=clock)
    for _ in range(3 * REFETCHES_PER_MINUTE):
        made_up = SigningKey(f"made-up-{uuid.uuid4()}", key_one.private, "RS256")
        with pytest.raises(KeyUnavailable):
            await keys.key_for(made_up.sign())
    assert provider.fetches == REFETCHES_PER_MINUTE
    assert (await keys.key_for(key_one.sign())).key_id == key_one.kid


async def test_an_outage_does_not_keep_valid_tokens_refused_once_the_provider_is_back(
    provider: IdentityProvider, key_one: SigningKey
) -> None:
    """Make sure failed fetches spend none of the refetch budget: after ten seconds of
    tokens arriving during an outage, the first fetch once the provider is back (after at
    most one backoff) serves again, not a minute later."""
    clock = FakeMonotonic()
    keys = JwksKeys(provider.url, monotonic=clock)
    provider.up = False
    for _ in range(20):
        clock.now += 0.5
        with pytest.raises(KeyUnavailable):
            await keys.key_for(key_one.sign())

    provider.up = True
    clock.now += MAX_FAILED_FETCH_BACKOFF_SECONDS

    assert (await keys.key_for(key_one.sign())).key_id == key_one.kid


async def test_failed_fetches_back_off(provider: IdentityProvider, key_one: SigningKey) -> None:
    """Make sure a minute of outage with a token every half second asks the down provider
    about once per backoff, not for every token."""
    clock = FakeMonotonic()
    keys = JwksKeys(provider.url, monotonic=clock)
    provider.up = False
    for _ in range(120):
        clock.now += 0.5
        with pytest.raises(KeyUnavailable):
            await keys.key_for(key_one.sign())

    assert provider.fetches <= 60 / MAX_FAILED_FETCH_BACKOFF_SECONDS + 4


async def test_requests_waiting_on_a_failed_fetch_share_its_outcome(
    provider: IdentityProvider, key_one: SigningKey
) -> None:
    """Make sure twenty requests arriving while the provider is down cause one fetch, not
    twenty in a row (each would wait for its own timeout)."""
    provider.up = False
    keys = JwksKeys(provider.url, monotonic=FakeMonotonic())

    outcomes = await asyncio.gather(
        *(keys.key_for(key_one.sign()) for _ in range(20)), return_exceptions=True
    )

    assert all(isinstance(outcome, KeyUnavailable) for outcome in outcomes)
    assert provider.fetches == 1


@pytest.mark.parametrize(
    "header", [{"alg": "RS256"}, {"alg": "RS256", "kid": 7}, {"alg": "RS256", "kid": ""}]
)
async def test_a_token_without_a_usable_kid_is_refused(
    provider: IdentityProvider, key_one: SigningKey, header: dict[str, Any]
) -> None:
    """Make sure a token that names no key is refused without asking the provider."""
    token = jwt.encode({"sub": "alice", "role": "user"}, key_one.private, "RS256")
    rest = token.partition(".")[2]
    forged = jwt.utils.base64url_encode(json.dumps(header).encode()).decode() + "." + rest
    with pytest.raises(KeyUnavailable):
        await JwksKeys(provider.url).key_for(forged)
    assert provider.fetches == 0


# --- through the API ---------------------------------------------------------------


@pytest.fixture
async def jwks_gql(
    aiohttp_client: Any, database: Any, clock: Any, provider: IdentityProvider
) -> GraphQLClient:
    from server.http.app import create_app

    settings = Settings.from_env(
        jwks_env(
            provider.url, DATABASE_URL=database.url, AUTH_JWT_ROLE_CLAIM="https://example.com/roles"
        )
    )
    app = create_app(settings, clock=clock, engine=database.engine)
    return GraphQLClient(await aiohttp_client(app))


async def viewer(client: GraphQLClient, token: str) -> dict[str, Any]:
    return await client.post("{ viewer { id role } }", auth=f"Bearer {token}")


async def test_the_api_follows_a_key_rotation_and_fails_closed_in_an_outage(
    jwks_gql: GraphQLClient, provider: IdentityProvider, key_one: SigningKey, key_two: SigningKey
) -> None:
    """Make sure the running server accepts a rotated key, and refuses when keys can't be had."""
    admin = {"https://example.com/roles": ["offline_access", "admin"]}
    body = await viewer(jwks_gql, key_one.sign(role=None, **admin))
    assert body["data"] == {"viewer": {"id": "alice", "role": "ADMIN"}}

    provider.published = [key_one, key_two]
    body = await viewer(jwks_gql, key_two.sign(role=None, **admin))
    assert body["data"] == {"viewer": {"id": "alice", "role": "ADMIN"}}

    provider.up = False
    newcomer = SigningKey.rsa("key-three")
    provider.published.append(newcomer)
    body = await viewer(jwks_gql, newcomer.sign(role=None, **admin))
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert not body.get("data")


# --- the role claim ------------------------------------------------------------------


def secret_settings(role_claim: str | None) -> Settings:
    overrides = {"AUTH_JWT_ROLE_CLAIM": role_claim} if role_claim else {}
    return Settings.from_env(base_env(**overrides))


def hs256(**claims: Any) -> str:
    now = datetime.now(UTC)
    payload = {"sub": "alice", "exp": now + timedelta(minutes=5), **claims}
    return jwt.encode(payload, base_env()["AUTH_JWT_SECRET"], "HS256")


@pytest.mark.parametrize(
    ("role_claim", "claims", "role"),
    [
        pytest.param(None, {"role": "service"}, Role.SERVICE, id="default-role"),
        pytest.param(
            "https://example.com/roles",
            {"https://example.com/roles": "admin"},
            Role.ADMIN,
            id="namespaced",
        ),
        pytest.param(
            "https://example.com/roles",
            {"https://example.com/roles": ["uma_authorization", "user"]},
            Role.USER,
            id="namespaced-list",
        ),
        pytest.param(
            "realm_access.roles",
            {"realm_access": {"roles": ["offline_access", "service"]}},
            Role.SERVICE,
            id="dotted-path",
        ),
        pytest.param(
            "app.role",
            {"app.role": "admin", "app": {"role": "user"}},
            Role.ADMIN,
            id="literal-first",
        ),
    ],
)
def test_the_role_comes_from_the_configured_claim(
    role_claim: str | None, claims: dict[str, Any], role: Role
) -> None:
    """Make sure roles are read from plain, namespaced and nested claims."""
    principal = authenticate(f"Bearer {hs256(**claims)}", secret_settings(role_claim).jwt)
    assert principal.role is role


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"role": "admin"}, id="role-in-the-default-claim-only"),
        pytest.param({"https://example.com/roles": ["admin", "user"]}, id="two-ghvault-roles"),
        pytest.param({"https://example.com/roles": ["offline_access"]}, id="no-ghvault-role"),
        pytest.param({"https://example.com/roles": {"admin": True}}, id="not-a-role"),
    ],
)
def test_an_absent_or_ambiguous_role_is_refused(claims: dict[str, Any]) -> None:
    """Make sure a token is refused unless the configured claim names exactly one role."""
    settings = secret_settings("https://example.com/roles")
    with pytest.raises(AuthenticationError):
        authenticate(f"Bearer {hs256(**claims)}", settings.jwt)


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"AUTH_JWT_JWKS_URL": "https://idp.example/jwks.json"},
            "set only one of",
            id="jwks-and-secret",
        ),
        pytest.param(
            {"AUTH_JWT_JWKS_URL": "file:///etc/passwd"}, "AUTH_JWT_JWKS_URL", id="not-http"
        ),
        pytest.param({"AUTH_JWT_ROLE_CLAIM": "a..b"}, "AUTH_JWT_ROLE_CLAIM", id="empty-segment"),
    ],
)
def test_bad_identity_provider_settings_are_one_line(env: dict[str, str], message: str) -> None:
    """Make sure JWKS and role-claim settings are checked at start-up."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(base_env(**env))


def test_production_refuses_a_key_set_without_an_audience() -> None:
    """Make sure ghvault in production never accepts any token its identity provider signs
    (for other APIs too): AUTH_JWT_AUDIENCE is required with AUTH_JWT_JWKS_URL."""
    env = jwks_env("https://idp.example/jwks.json", GHVAULT_ENV="production")

    with pytest.raises(ConfigError, match="AUTH_JWT_AUDIENCE must be set"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "AUTH_JWT_AUDIENCE": "urn:ghvault"}).start_up_warnings == ()


def test_development_warns_about_a_key_set_without_an_audience() -> None:
    without = Settings.from_env(jwks_env("https://idp.example/jwks.json"))
    audience = Settings.from_env(
        jwks_env("https://idp.example/jwks.json", AUTH_JWT_AUDIENCE="urn:ghvault")
    )

    assert [warning.split(":")[0] for warning in without.start_up_warnings] == [
        "AUTH_JWT_AUDIENCE must be set with AUTH_JWT_JWKS_URL"
    ]
    assert audience.start_up_warnings == ()
    assert Settings.from_env(base_env()).start_up_warnings == ()


@pytest.mark.parametrize(
    ("audience", "accepted"),
    [("urn:ghvault", True), ("urn:other-api", False), (None, False)],
    ids=["ghvault", "another-api", "no-audience"],
)
async def test_a_token_minted_for_another_api_is_refused(
    provider: IdentityProvider, key_one: SigningKey, audience: str | None, accepted: bool
) -> None:
    settings = Settings.from_env(jwks_env(provider.url, AUTH_JWT_AUDIENCE="urn:ghvault"))
    keys = JwksKeys(provider.url)
    token = key_one.sign(**({"aud": audience} if audience else {}))

    if accepted:
        assert await principal_of(token, keys, settings) is Role.USER
    else:
        with pytest.raises(AuthenticationError):
            await principal_of(token, keys, settings)
