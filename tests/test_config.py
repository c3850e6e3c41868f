"""Tests for settings from the environment and for bearer JWT verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.auth import AuthenticationError, Principal, authenticate
from server.config import ConfigError, Settings
from server.crypto import Keyring, TokenSlot
from server.domain.enums import Role
from tests.helpers import ACTIVE_KEY, JWT_SECRET, RETIRED_KEY, base_env

KEY_ENV = "USER_GH_APP_TOKEN_ENCRYPTION_KEY"
RETIRED_ENV = "USER_GH_APP_TOKEN_ENCRYPTION_KEYS_RETIRED"
SECRET_VARS = (
    KEY_ENV,
    RETIRED_ENV,
    "AUTH_JWT_SECRET",
    "AUTH_JWT_PUBLIC_KEY",
    "GITHUB_APP_CLIENT_SECRET",
    "GITHUB_APP_CLIENT_SECRET_LITE",
    "GITHUB_APP_WEBHOOK_SECRET",
    "GITHUB_APP_WEBHOOK_SECRET_LITE",
)

KEY_31_BYTES = base64.b64encode(bytes(range(100, 131))).decode()
NOT_BASE64 = "%%this*is*not*base64%%"
MYSQL_URL = "mysql://u:hunter2@h/db"


def pem_public_key(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_env(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, str]:
    env = base_env(AUTH_JWT_PUBLIC_KEY=pem_public_key(private_key))
    del env["AUTH_JWT_SECRET"]
    return env


def windows(secret: str, size: int = 8) -> set[str]:
    """Every run of ``size`` characters in a secret: none may show up in output."""
    return {secret[start : start + size] for start in range(len(secret) - size + 1)}


def assert_reveals_no_secret(text: str, env: Mapping[str, str]) -> None:
    for name in SECRET_VARS:
        for window in windows(env.get(name, "")):
            assert window not in text, f"{name} leaks into {text!r}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "sub": "u1",
        "role": "user",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def hs256(payload: dict[str, Any], secret: str = JWT_SECRET) -> str:
    return "Bearer " + jwt.encode(payload, secret, algorithm="HS256")


def forged_hs256(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token keyed with arbitrary bytes (PyJWT refuses PEM keys for HMAC)."""

    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(payload)
    signature = base64.urlsafe_b64encode(
        hmac.new(key, signing_input, hashlib.sha256).digest()
    ).rstrip(b"=")
    return "Bearer " + (signing_input + b"." + signature).decode()


# --- configuration errors ----------------------------------------------------

BAD_CONFIGS = [
    pytest.param({KEY_ENV: None}, KEY_ENV, None, id="missing-key"),
    pytest.param({KEY_ENV: KEY_31_BYTES}, KEY_ENV, KEY_31_BYTES, id="31-byte-key"),
    pytest.param({KEY_ENV: NOT_BASE64}, KEY_ENV, NOT_BASE64, id="non-base64-key"),
    pytest.param({"AUTH_JWT_SECRET": ACTIVE_KEY}, KEY_ENV, ACTIVE_KEY, id="key-is-jwt-secret"),
    pytest.param(
        {"GITHUB_APP_WEBHOOK_SECRET": ACTIVE_KEY}, KEY_ENV, ACTIVE_KEY, id="key-is-webhook-secret"
    ),
    pytest.param({RETIRED_ENV: NOT_BASE64}, RETIRED_ENV, NOT_BASE64, id="malformed-retired-key"),
    pytest.param(
        {RETIRED_ENV: f"{RETIRED_KEY},{KEY_31_BYTES}"},
        RETIRED_ENV,
        KEY_31_BYTES,
        id="short-second-retired-key",
    ),
    pytest.param({"DATABASE_URL": MYSQL_URL}, "DATABASE_URL", MYSQL_URL, id="mysql-url"),
    pytest.param(
        {"DATABASE_URL": "sqlite://relative-without-third-slash"},
        "DATABASE_URL",
        "sqlite://relative-without-third-slash",
        id="sqlite-two-slashes",
    ),
    pytest.param(
        {"DATABASE_URL": "postgres://u:hunter2@/ghvault"},
        "DATABASE_URL",
        "postgres://u:hunter2@/ghvault",
        id="postgres-without-host",
    ),
    pytest.param(
        {"DATABASE_URL": "postgres://u:hunter2@db.internal"},
        "DATABASE_URL",
        "postgres://u:hunter2@db.internal",
        id="postgres-without-database",
    ),
    pytest.param(
        {"DATABASE_URL": "just some garbage"}, "DATABASE_URL", "just some garbage", id="garbage"
    ),
    pytest.param(
        {"DATABASE_URL": "postgres://u:hunter2@[::1/db"},
        "DATABASE_URL",
        "postgres://u:hunter2@[::1/db",
        id="unparsable-url",
    ),
    pytest.param({"AUTH_JWT_SECRET": None}, "AUTH_JWT_SECRET", None, id="missing-jwt-secret"),
    pytest.param(
        {"AUTH_JWT_SECRET": "short-jwt-secret"},
        "AUTH_JWT_SECRET",
        "short-jwt-secret",
        id="short-jwt-secret",
    ),
    pytest.param(
        {"AUTH_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n"},
        "AUTH_JWT_PUBLIC_KEY",
        "MFkwEwYHKoZIzj0CAQYI",
        id="jwt-secret-and-public-key",
    ),
    pytest.param({"GHVAULT_ENV": "staging"}, "GHVAULT_ENV", "staging", id="bad-environment"),
    pytest.param({"PORT": "eighty"}, "PORT", "eighty", id="non-numeric-port"),
    pytest.param({"PORT": "70000"}, "PORT", "70000", id="port-out-of-range"),
    pytest.param({"GRAPHIQL_ENABLED": "sometimes"}, "GRAPHIQL_ENABLED", "sometimes", id="bad-flag"),
    pytest.param({"PORT": "nan"}, "PORT", "nan", id="nan-port"),
    pytest.param({"PORT": "80.5"}, "PORT", "80.5", id="fractional-port"),
    pytest.param({"GRAPHQL_MAX_DEPTH": "inf"}, "GRAPHQL_MAX_DEPTH", "inf", id="infinite-depth"),
    pytest.param(
        {"GITHUB_TIMEOUT_SECONDS": "nan"}, "GITHUB_TIMEOUT_SECONDS", "nan", id="nan-timeout"
    ),
    pytest.param(
        {"HTTP_MAX_CONNECTIONS": "many"}, "HTTP_MAX_CONNECTIONS", "many", id="connections-word"
    ),
    pytest.param({"HTTP_MAX_CONNECTIONS": "1"}, "HTTP_MAX_CONNECTIONS", None, id="one-connection"),
    pytest.param(
        {"HTTP_IDLE_TIMEOUT_SECONDS": "0"}, "HTTP_IDLE_TIMEOUT_SECONDS", None, id="no-idle-time"
    ),
    pytest.param(
        {"SHUTDOWN_GRACE_SECONDS": "-1"}, "SHUTDOWN_GRACE_SECONDS", None, id="negative-grace"
    ),
    pytest.param(
        {"SHUTDOWN_GRACE_SECONDS": "nan"}, "SHUTDOWN_GRACE_SECONDS", "nan", id="nan-grace"
    ),
    pytest.param(
        {"GITHUB_GIT_BASE_URL": "ssh://git@github.example"},
        "GITHUB_GIT_BASE_URL",
        "git@github.example",
        id="git-base-not-http",
    ),
    pytest.param(
        {"GITHUB_PROXY_PUBLIC_URL": "vault.example.com"},
        "GITHUB_PROXY_PUBLIC_URL",
        "vault.example.com",
        id="public-url-without-scheme",
    ),
    pytest.param(
        {"GITHUB_PROXY_REQUESTS_PER_MINUTE": "0"},
        "GITHUB_PROXY_REQUESTS_PER_MINUTE",
        None,
        id="no-requests-per-minute",
    ),
    pytest.param(
        {"GITHUB_PROXY_MAX_GIT_BODY_BYTES": "lots"},
        "GITHUB_PROXY_MAX_GIT_BODY_BYTES",
        "lots",
        id="git-body-limit-word",
    ),
    pytest.param(
        {"GITHUB_PROXY_IDLE_TIMEOUT_SECONDS": "nan"},
        "GITHUB_PROXY_IDLE_TIMEOUT_SECONDS",
        "nan",
        id="nan-proxy-idle-timeout",
    ),
    pytest.param(
        {"REFRESH_SWEEP_INTERVAL_SECONDS": "0.01"},
        "REFRESH_SWEEP_INTERVAL_SECONDS",
        "0.01",
        id="sweep-interval-too-short",
    ),
    pytest.param(
        {"AUTH_JWT_SECRET": ACTIVE_KEY.rstrip("=")},
        KEY_ENV,
        ACTIVE_KEY.rstrip("="),
        id="key-is-jwt-secret-unpadded",
    ),
    pytest.param(
        {"GITHUB_APP_CLIENT_ID": "Iv1.a1b2c3d4e5f6"},
        "GITHUB_APP_CLIENT_SECRET",
        "Iv1.a1b2c3d4e5f6",
        id="client-id-without-secret",
    ),
    pytest.param(
        {"GITHUB_APP_CLIENT_SECRET_LITE": "lite-client-secret-value"},
        "GITHUB_APP_CLIENT_ID_LITE",
        "lite-client-secret-value",
        id="lite-secret-without-client-id",
    ),
]


@pytest.mark.parametrize(("overrides", "variable", "value"), BAD_CONFIGS)
def test_bad_config_raises_one_line_naming_the_variable_without_its_value(
    overrides: dict[str, str | None], variable: str, value: str | None
) -> None:
    """Make sure each bad setting is one safe line that names the variable, never the value."""
    env = base_env()
    for name, setting in overrides.items():
        if setting is None:
            env.pop(name, None)
        else:
            env[name] = setting
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert message.strip()
    assert "\n" not in message
    assert "\r" not in message
    assert variable in message
    if value is not None:
        assert value not in message
    assert "hunter2" not in message
    assert_reveals_no_secret(message, env)
    assert caught.value.__cause__ is None


def test_key_equal_to_jwt_secret_is_refused_even_when_the_jwt_secret_is_urlsafe() -> None:
    """Make sure a key reused as the JWT secret is refused in its URL-safe spelling too."""
    key = bytes(range(200, 232))
    urlsafe = base64.urlsafe_b64encode(key).decode()
    assert urlsafe != base64.b64encode(key).decode()
    env = base_env(**{KEY_ENV: urlsafe, "AUTH_JWT_SECRET": urlsafe})
    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET"):
        Settings.from_env(env)


# --- good configurations -----------------------------------------------------


def test_defaults() -> None:
    """Make sure a minimal environment gives SQLite in data/, development and port 8080."""
    settings = Settings.from_env(base_env())
    assert settings.database.engine == "sqlite"
    assert settings.database.sqlite_path == Path("data") / "ghvault.sqlite"
    assert settings.environment == "development"
    assert not settings.is_production
    assert settings.graphiql_enabled
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.github_oauth_base_url == "https://github.com"
    assert settings.github_api_base_url == "https://api.github.com"
    assert settings.github_apps == {}
    assert settings.jwt.secret == JWT_SECRET.encode()
    assert settings.jwt.algorithms == ("HS256",)
    assert settings.jwt.issuer is None
    assert settings.jwt.audience is None


def test_serving_limits_default_to_a_capped_and_quickly_stopping_server() -> None:
    serving = Settings.from_env(base_env()).serving
    assert (serving.max_connections, serving.idle_timeout_seconds) == (1000, 15.0)
    assert serving.shutdown_grace_seconds == 10.0


def test_serving_limits_are_read_from_the_environment() -> None:
    env = base_env(
        HTTP_MAX_CONNECTIONS="50", HTTP_IDLE_TIMEOUT_SECONDS="75", SHUTDOWN_GRACE_SECONDS="0"
    )
    serving = Settings.from_env(env).serving
    assert (serving.max_connections, serving.idle_timeout_seconds) == (50, 75.0)
    assert serving.shutdown_grace_seconds == 0.0


def test_the_github_proxy_forwards_to_github_with_bounded_bodies_by_default() -> None:
    proxy = Settings.from_env(base_env()).github_proxy
    assert (proxy.git_base_url, proxy.public_url) == ("https://github.com", None)
    assert (proxy.max_api_body_bytes, proxy.max_git_body_bytes) == (100 * 2**20, 2 * 2**30)
    assert (proxy.requests_per_minute, proxy.idle_timeout_seconds) == (120, 300.0)


def test_github_proxy_settings_are_read_from_the_environment() -> None:
    env = base_env(
        GITHUB_GIT_BASE_URL="https://ghe.example.com/",
        GITHUB_PROXY_PUBLIC_URL="https://vault.example.com/",
        GITHUB_PROXY_MAX_API_BODY_BYTES="2048",
        GITHUB_PROXY_MAX_GIT_BODY_BYTES="4096",
        GITHUB_PROXY_REQUESTS_PER_MINUTE="30",
        GITHUB_PROXY_IDLE_TIMEOUT_SECONDS="60",
    )
    proxy = Settings.from_env(env).github_proxy
    assert (proxy.git_base_url, proxy.public_url) == (
        "https://ghe.example.com",
        "https://vault.example.com",
    )
    assert (proxy.max_api_body_bytes, proxy.max_git_body_bytes) == (2048, 4096)
    assert (proxy.requests_per_minute, proxy.idle_timeout_seconds) == (30, 60.0)


def test_environment_without_ghvault_env_is_development() -> None:
    """Make sure leaving GHVAULT_ENV out means development, not production."""
    env = base_env()
    del env["GHVAULT_ENV"]
    assert Settings.from_env(env).environment == "development"


@pytest.mark.parametrize(
    ("graphiql", "expected"),
    [(None, False), ("true", True), ("false", False)],
)
def test_production_turns_graphiql_off_unless_enabled(graphiql: str | None, expected: bool) -> None:
    """Make sure production has no GraphiQL unless GRAPHIQL_ENABLED=true asks for it."""
    env = base_env(GHVAULT_ENV="production")
    if graphiql is not None:
        env["GRAPHIQL_ENABLED"] = graphiql
    settings = Settings.from_env(env)
    assert settings.is_production
    assert settings.graphiql_enabled is expected


def test_development_graphiql_can_be_turned_off() -> None:
    """Make sure GRAPHIQL_ENABLED=false turns GraphiQL off in development too."""
    assert not Settings.from_env(base_env(GRAPHIQL_ENABLED="false")).graphiql_enabled


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////abs/path/ghvault.sqlite", Path("/abs/path/ghvault.sqlite")),
        ("sqlite:///rel/path/ghvault.sqlite", Path("rel/path/ghvault.sqlite")),
    ],
)
def test_sqlite_urls(url: str, path: Path) -> None:
    """Make sure four slashes mean an absolute path and three a relative one."""
    database = Settings.from_env(base_env(DATABASE_URL=url)).database
    assert database.is_sqlite
    assert database.sqlite_path == path
    assert database.sqlite_path.is_absolute() is url.startswith("sqlite:////")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_url(scheme: str) -> None:
    """Make sure a PostgreSQL URL is kept whole as the DSN and its password stays out of repr."""
    url = f"{scheme}://ghvault:pg-password-1234@db.internal:5432/ghvault"
    settings = Settings.from_env(base_env(DATABASE_URL=url))
    assert settings.database.engine == "postgres"
    assert not settings.database.is_sqlite
    assert settings.database.postgres_dsn == url
    assert settings.database.sqlite_path is None
    assert "pg-password-1234" not in repr(settings)


def test_host_and_port() -> None:
    """Make sure HOST and PORT are read."""
    settings = Settings.from_env(base_env(HOST="192.0.2.10", PORT="9000"))
    assert (settings.host, settings.port) == ("192.0.2.10", 9000)


def test_retired_keys_are_parsed() -> None:
    """Make sure retired keys decrypt values the active key never sealed."""
    settings = Settings.from_env(base_env(**{RETIRED_ENV: f"{RETIRED_KEY}, ,"}))
    old = Keyring.from_env_values(RETIRED_KEY)
    active = Keyring.from_env_values(ACTIVE_KEY)
    assert settings.keyring.key_ids == (active.active_key_id, old.active_key_id)
    slot = TokenSlot(user_id="u1", app_type="standard", github_user_id="42", kind="access")
    sealed = old.encrypt("ghu_retired", slot)
    assert settings.keyring.decrypt(sealed, slot) == "ghu_retired"
    assert settings.keyring.needs_rewrap(sealed)


def test_github_apps_are_read_for_both_app_types() -> None:
    """Make sure client id and secret pairs configure the standard and lite apps."""
    settings = Settings.from_env(
        base_env(
            GITHUB_APP_CLIENT_ID="Iv1.standard",
            GITHUB_APP_CLIENT_SECRET="standard-client-secret",
            GITHUB_APP_CLIENT_ID_LITE="Iv1.lite",
            GITHUB_APP_CLIENT_SECRET_LITE="lite-client-secret",
        )
    )
    assert {app.client_id for app in settings.github_apps.values()} == {"Iv1.standard", "Iv1.lite"}


def test_settings_repr_reveals_no_secret() -> None:
    """Make sure printing Settings shows neither the JWT secret, the keys nor GitHub secrets."""
    env = base_env(
        **{RETIRED_ENV: RETIRED_KEY},
        GITHUB_APP_CLIENT_ID="Iv1.standard",
        GITHUB_APP_CLIENT_SECRET="Q7vX2mK9pL4wZ8rT1yB6",
        GITHUB_APP_WEBHOOK_SECRET="hW3nJ5cF0dS8gA2kE7uR",
    )
    settings = Settings.from_env(env)
    parts = (settings, settings.jwt, settings.keyring, settings.database, settings.github_apps)
    text = " ".join(repr(part) for part in parts) + str(settings)
    assert_reveals_no_secret(text, env)
    for raw in (b"A" * 32, b"R" * 32):
        assert str(raw)[2:10] not in text


# --- bearer JWT verification -------------------------------------------------


def test_hs256_token_is_accepted() -> None:
    """Make sure a well-formed HS256 token gives its principal."""
    settings = Settings.from_env(base_env())
    principal = authenticate(
        hs256(claims(role="admin", email="a@example.com", name="A")), settings.jwt
    )
    assert principal == Principal(id="u1", role=Role.ADMIN, email="a@example.com", name="A")


@pytest.mark.parametrize("key_fixture", ["rsa_key", "ec_key"])
def test_public_key_config_accepts_tokens_signed_by_its_private_key(
    key_fixture: str, request: pytest.FixtureRequest
) -> None:
    """Make sure AUTH_JWT_PUBLIC_KEY verifies RS256 and ES256 tokens from the private key."""
    private_key = request.getfixturevalue(key_fixture)
    algorithm = "RS256" if key_fixture == "rsa_key" else "ES256"
    settings = Settings.from_env(public_key_env(private_key))
    assert settings.jwt.secret is None
    token = jwt.encode(claims(role="service"), private_key, algorithm=algorithm)
    principal = authenticate(f"Bearer {token}", settings.jwt)
    assert principal == Principal(id="u1", role=Role.SERVICE)


@pytest.mark.parametrize("key_fixture", ["rsa_key", "ec_key"])
def test_public_key_config_rejects_hs256_tokens(
    key_fixture: str, request: pytest.FixtureRequest
) -> None:
    """Make sure HS256 is refused, including one keyed with the public key itself."""
    private_key = request.getfixturevalue(key_fixture)
    env = public_key_env(private_key)
    settings = Settings.from_env(env)
    with pytest.raises(AuthenticationError):
        authenticate(hs256(claims()), settings.jwt)
    with pytest.raises(AuthenticationError):
        authenticate(forged_hs256(claims(), env["AUTH_JWT_PUBLIC_KEY"].encode()), settings.jwt)


def test_public_key_config_rejects_tokens_from_another_private_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    """Make sure an RS256 token signed by some other key is refused."""
    settings = Settings.from_env(public_key_env(rsa_key))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), other, algorithm="RS256")
    with pytest.raises(AuthenticationError):
        authenticate(f"Bearer {token}", settings.jwt)


def test_hs256_config_rejects_tokens_signed_with_another_secret() -> None:
    """Make sure a token signed with a different secret is refused."""
    settings = Settings.from_env(base_env())
    with pytest.raises(AuthenticationError):
        authenticate(hs256(claims(), "another-secret-that-is-long-enough-012345"), settings.jwt)


@pytest.mark.parametrize(
    ("config", "token_claims", "accepted"),
    [
        pytest.param({}, {"aud": "someone-else", "iss": "someone"}, True, id="unconfigured"),
        pytest.param({"AUTH_JWT_AUDIENCE": "ghvault"}, {"aud": "ghvault"}, True, id="right-aud"),
        pytest.param({"AUTH_JWT_AUDIENCE": "ghvault"}, {"aud": "other"}, False, id="wrong-aud"),
        pytest.param({"AUTH_JWT_AUDIENCE": "ghvault"}, {}, False, id="missing-aud"),
        pytest.param({"AUTH_JWT_ISSUER": "https://idp"}, {"iss": "https://idp"}, True, id="iss"),
        pytest.param({"AUTH_JWT_ISSUER": "https://idp"}, {"iss": "https://x"}, False, id="bad-iss"),
        pytest.param({"AUTH_JWT_ISSUER": "https://idp"}, {}, False, id="missing-iss"),
    ],
)
def test_issuer_and_audience_are_enforced_only_when_configured(
    config: dict[str, str], token_claims: dict[str, str], accepted: bool
) -> None:
    """Make sure iss and aud are checked exactly when AUTH_JWT_ISSUER/AUDIENCE are set."""
    settings = Settings.from_env(base_env(**config))
    authorization = hs256(claims(**token_claims))
    if accepted:
        assert authenticate(authorization, settings.jwt).id == "u1"
    else:
        with pytest.raises(AuthenticationError):
            authenticate(authorization, settings.jwt)


@pytest.mark.parametrize(
    "token_claims",
    [
        pytest.param({"exp": None}, id="missing-exp"),
        pytest.param(
            {"exp": int((datetime.now(UTC) - timedelta(seconds=5)).timestamp())}, id="expired"
        ),
        pytest.param({"sub": None}, id="missing-sub"),
        pytest.param({"sub": ""}, id="empty-sub"),
        pytest.param({"sub": 7}, id="numeric-sub"),
        pytest.param({"sub": "u" * 256}, id="overlong-sub"),
        pytest.param({"role": "superuser"}, id="unknown-role"),
        pytest.param({"role": "ADMIN"}, id="role-in-capitals"),
        pytest.param({"role": None}, id="missing-role"),
    ],
)
def test_bad_claims_are_rejected(token_claims: dict[str, Any]) -> None:
    """Make sure tokens without exp, expired, or with a bad sub or role are refused."""
    settings = Settings.from_env(base_env())
    with pytest.raises(AuthenticationError):
        authenticate(hs256(claims(**token_claims)), settings.jwt)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer   ", "Basic dTE6cGFzcw==", "Bearer not-a-jwt"],
)
def test_missing_or_malformed_authorization_is_rejected(authorization: str | None) -> None:
    """Make sure anything but a Bearer JWT is refused."""
    settings = Settings.from_env(base_env())
    with pytest.raises(AuthenticationError):
        authenticate(authorization, settings.jwt)


def test_unsigned_token_is_rejected() -> None:
    """Make sure a token with alg none is refused."""
    settings = Settings.from_env(base_env())
    token = jwt.encode(claims(role="admin"), "", algorithm="none")
    with pytest.raises(AuthenticationError):
        authenticate(f"Bearer {token}", settings.jwt)


@pytest.mark.parametrize(
    ("url", "label"),
    [
        (
            "postgres://u:hunter2@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgres://u@h1:5432,h2:5433/db",
        ),
        ("postgresql://u@[::1]:5432,10.0.0.2/db", "postgresql://u@[::1]:5432,10.0.0.2/db"),
        ("postgres://db.internal/ghvault", "postgres://db.internal/ghvault"),
    ],
)
def test_a_multi_host_database_url_is_passed_on_as_it_is(url: str, label: str) -> None:
    """Make sure failover URLs (several hosts, as asyncpg reads them) are accepted unchanged,
    and named for people without the password or parameters."""
    database = Settings.from_env(base_env(DATABASE_URL=url)).database

    assert (database.engine, database.postgres_dsn, database.label) == ("postgres", url, label)


@pytest.mark.parametrize(
    "url", ["postgres://u:hunter2@h1:5432,h2:port/db", "postgres://u:hunter2@h1,,h2/db"]
)
def test_a_malformed_host_list_is_one_line(url: str) -> None:
    with pytest.raises(ConfigError, match="several, comma-separated") as refused:
        Settings.from_env(base_env(DATABASE_URL=url))
    assert "hunter2" not in str(refused.value)


def test_a_transaction_pooled_database_listens_only_on_a_direct_url() -> None:
    """Make sure DATABASE_POOL_MODE=transaction never LISTENs through DATABASE_URL (the pooler
    would hand the notifications to another client), and uses DATABASE_LISTEN_URL when set."""
    pooled = "postgres://u:hunter2@pgbouncer:6432/ghvault"
    direct = "postgres://u:hunter2@db:5432/ghvault"

    session = Settings.from_env(base_env(DATABASE_URL=pooled)).database
    without = Settings.from_env(base_env(DATABASE_URL=pooled, DATABASE_POOL_MODE="transaction"))
    with_listen = Settings.from_env(
        base_env(DATABASE_URL=pooled, DATABASE_POOL_MODE="transaction", DATABASE_LISTEN_URL=direct)
    )

    assert (session.pooled_per_transaction, session.listen_dsn) == (False, pooled)
    assert (without.database.pooled_per_transaction, without.database.listen_dsn) == (True, None)
    assert with_listen.database.listen_dsn == direct
    assert [line.split(":")[0] for line in without.start_up_warnings] == [
        "DATABASE_POOL_MODE=transaction without DATABASE_LISTEN_URL"
    ]
    assert with_listen.start_up_warnings == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_POOL_MODE": "statement"}, "DATABASE_POOL_MODE must be one of"),
        ({"DATABASE_LISTEN_URL": "sqlite:///x.sqlite"}, "DATABASE_LISTEN_URL must be"),
        ({"DATABASE_LISTEN_URL": "postgres://u:hunter2@db:port/x"}, "DATABASE_LISTEN_URL must be"),
        ({"DATABASE_URL": "sqlite:///x.sqlite", "DATABASE_POOL_MODE": "transaction"}, "PostgreSQL"),
    ],
    ids=["statement-mode", "sqlite-listen-url", "bad-listen-url", "sqlite-pooled"],
)
def test_pooling_settings_are_checked(env: dict[str, str], message: str) -> None:
    overrides = {"DATABASE_URL": "postgres://u:hunter2@pgbouncer:6432/ghvault", **env}
    with pytest.raises(ConfigError, match=message) as refused:
        Settings.from_env(base_env(**overrides))
    assert "hunter2" not in str(refused.value)
