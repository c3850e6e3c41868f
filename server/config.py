"""Settings, built once from the environment at start-up.

Every problem is reported as one ``ConfigError`` line that names the variable
and what is wrong with it, never the value: values here are secrets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from server.crypto import KeyConfigError, Keyring
from server.domain.enums import AppType
from server.github import GitHubApp

DEFAULT_SQLITE_PATH = Path("data") / "ghvault.sqlite"
ENVIRONMENTS = ("development", "production")
JWT_ALGORITHMS_FOR_PUBLIC_KEYS = ("RS256", "ES256")
MIN_SWEEP_INTERVAL_SECONDS = 1.0
# An identity provider signs the tokens of every API it serves with the same keys.
JWKS_WITHOUT_AUDIENCE = (
    "AUTH_JWT_AUDIENCE must be set with AUTH_JWT_JWKS_URL: without it, a token your identity "
    "provider minted for any other API is accepted too"
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A missing or malformed setting; the message is safe to print."""


POOL_MODES = ("session", "transaction")


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the data lives: a SQLite file or a PostgreSQL DSN.

    `pool_mode` "transaction": the DSN goes through a pooler (PgBouncer) that
    hands each transaction to any server connection, so no statement may be
    prepared for later and no connection LISTENs; `listen_dsn` is then a
    direct connection for LISTEN, if there is one.
    """

    engine: str  # "sqlite" | "postgres"
    sqlite_path: Path | None = None
    postgres_dsn: str | None = field(default=None, repr=False)
    pool_mode: str = "session"
    explicit_listen_dsn: str | None = field(default=None, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine == "sqlite"

    @property
    def pooled_per_transaction(self) -> bool:
        return self.pool_mode == "transaction"

    @property
    def listen_dsn(self) -> str | None:
        """Where to LISTEN: DATABASE_LISTEN_URL, else DATABASE_URL unless it is pooled."""
        if self.explicit_listen_dsn is not None or self.pooled_per_transaction:
            return self.explicit_listen_dsn
        return self.postgres_dsn

    @property
    def label(self) -> str:
        """Which database this is, for people: the SQLite file's absolute path, or the
        PostgreSQL URL without its password and parameters."""
        if self.sqlite_path is not None:
            return f"sqlite:///{self.sqlite_path.absolute()}"
        parts = urlsplit(self.postgres_dsn or "")
        credentials, _, hosts = parts.netloc.rpartition("@")
        user = credentials.partition(":")[0]
        return f"{parts.scheme}://{user + '@' if user else ''}{hosts}{parts.path}"


@dataclass(frozen=True)
class JwtConfig:
    secret: bytes | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    role_claim: str = "role"

    @property
    def algorithms(self) -> tuple[str, ...]:
        return ("HS256",) if self.secret is not None else JWT_ALGORITHMS_FOR_PUBLIC_KEYS


@dataclass(frozen=True)
class GraphQLLimits:
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 2000
    max_body_bytes: int = 64 * 1024
    # Counted before validation (server/graphql/budget.py); sized with
    # bench/hostile.py so the worst document stays near 20 ms of work.
    max_selections: int = 200
    max_fragment_spreads: int = 24
    max_cost: int = 500
    max_field_repeats: int = 4
    max_directives: int = 20


@dataclass(frozen=True)
class GitHubProxyConfig:
    """The GitHub proxy (server/github_proxy): where it forwards to, and its limits."""

    git_base_url: str = "https://github.com"
    # Where workers reach ghvault; GitHub's pagination links and redirects are
    # rewritten to it. Unset: the origin each request was sent to.
    public_url: str | None = None
    # A REST body is JSON or a blob (GitHub takes up to 100 MB); a push is a
    # packfile (GitHub refuses pushes over 2 GiB).
    max_api_body_bytes: int = 100 * 1024 * 1024
    max_git_body_bytes: int = 2 * 1024 * 1024 * 1024
    # Per capability, in each process: a burst of this many, refilled over a minute.
    requests_per_minute: int = 120
    # A git host may think for a while before a packfile's first byte; nothing
    # bounds a whole transfer, only silence.
    idle_timeout_seconds: float = 300.0


@dataclass(frozen=True)
class ServingLimits:
    """What one `ghvault serve` process holds open, and how long it waits (server/http/)."""

    # Client connections at once; at the cap an idle one makes room (connections.py).
    max_connections: int = 1000
    # How long a connection may take to send its first request, or idle between requests.
    idle_timeout_seconds: float = 15.0
    # From SIGTERM to exit: requests in flight get this long, sockets are closed at once.
    shutdown_grace_seconds: float = 10.0


@dataclass(frozen=True)
class Settings:
    database: DatabaseConfig
    keyring: Keyring = field(repr=False)
    jwt: JwtConfig = field(repr=False)
    github_apps: Mapping[AppType, GitHubApp] = field(default_factory=dict, repr=False)
    github_webhook_secrets: Mapping[AppType, bytes] = field(default_factory=dict, repr=False)
    github_oauth_base_url: str = "https://github.com"
    github_api_base_url: str = "https://api.github.com"
    github_timeout_seconds: float = 10.0
    github_proxy: GitHubProxyConfig = GitHubProxyConfig()
    environment: str = "development"
    graphiql_enabled: bool = True
    graphql_limits: GraphQLLimits = GraphQLLimits()
    serving: ServingLimits = ServingLimits()
    host: str = "127.0.0.1"
    port: int = 8080
    cors_allowed_origins: tuple[str, ...] = ()
    metrics_token: str | None = field(default=None, repr=False)
    metrics_multiprocess_dir: Path | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # None: no in-process sweeper (run `ghvault refresh-due` from a scheduler instead).
    refresh_sweep_interval_seconds: float | None = None

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def start_up_warnings(self) -> tuple[str, ...]:
        """Settings that work here but would be refused in production, logged by `serve`."""
        warnings = []
        if self.jwt.jwks_url is not None and self.jwt.audience is None:
            warnings.append(f"{JWKS_WITHOUT_AUDIENCE} (production refuses to start without it)")
        if self.database.pooled_per_transaction and self.database.listen_dsn is None:
            warnings.append(
                "DATABASE_POOL_MODE=transaction without DATABASE_LISTEN_URL: LISTEN cannot "
                "work through a transaction pooler, so status subscriptions poll the rows they "
                "watch (four reads a second each); set DATABASE_LISTEN_URL to a direct "
                "connection to hear changes at once"
            )
        return tuple(warnings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and check every setting; raise ConfigError on the first problem."""
        reader = _EnvReader(env)
        environment = reader.choice("GHVAULT_ENV", ENVIRONMENTS, default="development")
        is_production = environment == "production"
        jwt = _jwt_config(reader, production=is_production)
        keyring = _keyring(reader)
        github_apps, webhook_secrets = _github_apps(reader)
        _refuse_reused_secrets(keyring, jwt, webhook_secrets, github_apps)
        return cls(
            database=database_from_env(env),
            keyring=keyring,
            jwt=jwt,
            github_apps=github_apps,
            github_webhook_secrets=webhook_secrets,
            github_oauth_base_url=reader.url("GITHUB_OAUTH_BASE_URL", "https://github.com"),
            github_api_base_url=reader.url("GITHUB_API_BASE_URL", "https://api.github.com"),
            github_timeout_seconds=reader.number("GITHUB_TIMEOUT_SECONDS", 10.0, low=0.1),
            github_proxy=_github_proxy(reader),
            environment=environment,
            graphiql_enabled=reader.flag("GRAPHIQL_ENABLED", default=not is_production),
            graphql_limits=GraphQLLimits(
                max_depth=reader.integer("GRAPHQL_MAX_DEPTH", 12, low=2),
                max_aliases=reader.integer("GRAPHQL_MAX_ALIASES", 30, low=1),
                max_tokens=reader.integer("GRAPHQL_MAX_TOKENS", 2000, low=50),
                max_body_bytes=reader.integer("GRAPHQL_MAX_BODY_BYTES", 64 * 1024, low=1024),
            ),
            serving=ServingLimits(
                max_connections=reader.integer("HTTP_MAX_CONNECTIONS", 1000, low=2),
                idle_timeout_seconds=reader.number(
                    "HTTP_IDLE_TIMEOUT_SECONDS", 15.0, low=0.1, high=3600
                ),
                shutdown_grace_seconds=reader.number(
                    "SHUTDOWN_GRACE_SECONDS", 10.0, low=0, high=3600
                ),
            ),
            host=reader.get("HOST") or "127.0.0.1",
            port=reader.integer("PORT", 8080, low=0, high=65535),
            cors_allowed_origins=parse_origins(reader.get("CORS_ALLOWED_ORIGINS")),
            metrics_token=_metrics_token(reader),
            metrics_multiprocess_dir=reader.directory("PROMETHEUS_MULTIPROC_DIR"),
            trusted_proxies=reader.networks("TRUSTED_PROXIES"),
            refresh_sweep_interval_seconds=_sweep_interval(reader),
        )


def database_from_env(env: Mapping[str, str]) -> DatabaseConfig:
    """DATABASE_URL, with DATABASE_POOL_MODE and DATABASE_LISTEN_URL for PostgreSQL."""
    reader = _EnvReader(env)
    database = parse_database_url(reader.get("DATABASE_URL"))
    pool_mode = reader.choice("DATABASE_POOL_MODE", POOL_MODES, default="session")
    listen_url = reader.get("DATABASE_LISTEN_URL")
    if database.is_sqlite:
        if pool_mode != "session" or listen_url is not None:
            raise ConfigError("DATABASE_POOL_MODE and DATABASE_LISTEN_URL apply to PostgreSQL only")
        return database
    if listen_url is not None:
        try:
            listen = parse_database_url(listen_url)
        except ConfigError:
            listen = None
        if listen is None or listen.is_sqlite:
            raise ConfigError(
                "DATABASE_LISTEN_URL must be a postgres:// URL that reaches the database "
                "directly (not through a transaction pooler)"
            )
    return replace(database, pool_mode=pool_mode, explicit_listen_dsn=listen_url)


def parse_database_url(url: str | None) -> DatabaseConfig:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``postgres://...``."""
    if not url:
        return DatabaseConfig(engine="sqlite", sqlite_path=DEFAULT_SQLITE_PATH)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError("DATABASE_URL is not a valid URL") from None
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ConfigError(
                "DATABASE_URL must look like sqlite:///relative/path.sqlite "
                "or sqlite:////absolute/path.sqlite"
            )
        return DatabaseConfig(engine="sqlite", sqlite_path=Path(parts.path[1:]))
    if parts.scheme in ("postgres", "postgresql"):
        # Several comma-separated hosts (failover, with target_session_attrs) are
        # asyncpg's to read: the URL is passed on as it is.
        hosts = parts.netloc.rpartition("@")[2].split(",")
        if not all(_is_host_and_port(host) for host in hosts) or parts.path in ("", "/"):
            raise ConfigError(
                "DATABASE_URL must name a host (or several, comma-separated) and a database: "
                "postgres://host:5432/db"
            )
        return DatabaseConfig(engine="postgres", postgres_dsn=url)
    raise ConfigError("DATABASE_URL must start with sqlite:/// or postgres://")


def _is_host_and_port(text: str) -> bool:
    """`host`, `host:port`, `[v6 address]` or `[v6 address]:port`."""
    host, port = text, ""
    if text.startswith("["):
        address, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return False
        host, port = address, port[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    valid_port = port == "" or (port.isdigit() and 0 < int(port) < 65536)
    return bool(host) and valid_port and not any(char in host for char in "/?#@ ")


def parse_origins(value: str | None) -> tuple[str, ...]:
    """CORS_ALLOWED_ORIGINS: comma-separated exact origins, as browsers send them."""
    origins: list[str] = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "*" in item:
            raise ConfigError("CORS_ALLOWED_ORIGINS must list exact origins: '*' is not allowed")
        origins.append(_origin(item))
    return tuple(dict.fromkeys(origins))


def _origin(text: str) -> str:
    """`scheme://host[:port]`, lower-cased and without the scheme's default port."""
    problem = ConfigError(
        "CORS_ALLOWED_ORIGINS must be a comma-separated list of origins "
        "like https://app.example.com (scheme, host and port only)"
    )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise problem from None
    extras = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    if parts.scheme not in ("http", "https") or not parts.hostname or extras:
        raise problem
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default_port = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


class _EnvReader:
    """Typed access to the environment with one-line, value-free errors."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def choice(self, name: str, allowed: tuple[str, ...], *, default: str) -> str:
        value = self.get(name) or default
        if value not in allowed:
            raise ConfigError(f"{name} must be one of: {', '.join(allowed)}")
        return value

    def flag(self, name: str, *, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false")

    def number(self, name: str, default: float, *, low: float, high: float | None = None) -> float:
        value = self.get(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number") from None
        if not math.isfinite(number) or number < low or (high is not None and number > high):
            upper = f" and at most {high:g}" if high is not None else ""
            raise ConfigError(f"{name} must be at least {low:g}{upper}")
        return number

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        value = self.get(name)
        if value is not None and not value.isdigit():
            raise ConfigError(f"{name} must be a whole number")
        return int(self.number(name, default, low=low, high=high))

    def directory(self, name: str) -> Path | None:
        value = self.get(name)
        if value is not None and not Path(value).is_dir():
            raise ConfigError(f"{name} must be an existing directory")
        return Path(value) if value is not None else None

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        """A comma-separated list of IP addresses and CIDR networks."""
        networks = []
        for position, entry in enumerate((self.get(name) or "").split(","), start=1):
            if entry.strip():
                try:
                    networks.append(ipaddress.ip_network(entry.strip(), strict=False))
                except ValueError:
                    raise ConfigError(
                        f"{name} entry {position} is not an IP address or CIDR network"
                    ) from None
        return tuple(networks)

    def url(self, name: str, default: str) -> str:
        value = self.get(name) or default
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name} must be an http(s) URL")
        return value.rstrip("/")


def _jwt_config(reader: _EnvReader, *, production: bool) -> JwtConfig:
    secret = reader.get("AUTH_JWT_SECRET")
    public_key = reader.get("AUTH_JWT_PUBLIC_KEY")
    jwks_url = reader.get("AUTH_JWT_JWKS_URL")
    if sum(value is not None for value in (secret, public_key, jwks_url)) > 1:
        raise ConfigError(
            "set only one of AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY and AUTH_JWT_JWKS_URL"
        )
    if not secret and not public_key and not jwks_url:
        raise ConfigError(
            "AUTH_JWT_SECRET (or AUTH_JWT_PUBLIC_KEY, or AUTH_JWT_JWKS_URL) is not set"
        )
    if jwks_url is not None:
        parts = urlsplit(jwks_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("AUTH_JWT_JWKS_URL must be an http(s) URL")
    role_claim = reader.get("AUTH_JWT_ROLE_CLAIM") or "role"
    if "" in role_claim.split("."):
        raise ConfigError("AUTH_JWT_ROLE_CLAIM must be a claim name or a dotted path to one")
    if secret is not None and len(secret.encode()) < 32:
        raise ConfigError("AUTH_JWT_SECRET must be at least 32 bytes long")
    if public_key is not None and "-----BEGIN PUBLIC KEY-----" not in public_key:
        raise ConfigError("AUTH_JWT_PUBLIC_KEY must be a PEM public key")
    audience = reader.get("AUTH_JWT_AUDIENCE")
    if jwks_url is not None and audience is None and production:
        raise ConfigError(JWKS_WITHOUT_AUDIENCE)
    return JwtConfig(
        secret=secret.encode() if secret else None,
        public_key=public_key,
        jwks_url=jwks_url,
        issuer=reader.get("AUTH_JWT_ISSUER"),
        audience=audience,
        role_claim=role_claim,
    )


def _github_proxy(reader: _EnvReader) -> GitHubProxyConfig:
    default = GitHubProxyConfig()
    public_url = reader.get("GITHUB_PROXY_PUBLIC_URL")
    return GitHubProxyConfig(
        git_base_url=reader.url("GITHUB_GIT_BASE_URL", default.git_base_url),
        public_url=reader.url("GITHUB_PROXY_PUBLIC_URL", public_url) if public_url else None,
        max_api_body_bytes=reader.integer(
            "GITHUB_PROXY_MAX_API_BODY_BYTES", default.max_api_body_bytes, low=1024
        ),
        max_git_body_bytes=reader.integer(
            "GITHUB_PROXY_MAX_GIT_BODY_BYTES", default.max_git_body_bytes, low=1024
        ),
        requests_per_minute=reader.integer(
            "GITHUB_PROXY_REQUESTS_PER_MINUTE", default.requests_per_minute, low=1
        ),
        idle_timeout_seconds=reader.number(
            "GITHUB_PROXY_IDLE_TIMEOUT_SECONDS", default.idle_timeout_seconds, low=1.0
        ),
    )


def _metrics_token(reader: _EnvReader) -> str | None:
    token = reader.get("METRICS_TOKEN")
    if token is not None and len(token) < 16:
        raise ConfigError("METRICS_TOKEN must be at least 16 characters long")
    return token


def _sweep_interval(reader: _EnvReader) -> float | None:
    """Unset or 0: no in-process sweeper."""
    interval = reader.number("REFRESH_SWEEP_INTERVAL_SECONDS", 0, low=0)
    if 0 < interval < MIN_SWEEP_INTERVAL_SECONDS:
        raise ConfigError(
            "REFRESH_SWEEP_INTERVAL_SECONDS must be 0 (off) "
            f"or at least {MIN_SWEEP_INTERVAL_SECONDS:g}"
        )
    return interval or None


def _keyring(reader: _EnvReader) -> Keyring:
    try:
        return Keyring.from_env_values(
            reader.get("USER_GH_APP_TOKEN_ENCRYPTION_KEY"),
            reader.get("USER_GH_APP_TOKEN_ENCRYPTION_KEYS_RETIRED"),
        )
    except KeyConfigError as exc:
        raise ConfigError(str(exc)) from None


def _github_apps(
    reader: _EnvReader,
) -> tuple[dict[AppType, GitHubApp], dict[AppType, bytes]]:
    apps: dict[AppType, GitHubApp] = {}
    webhook_secrets: dict[AppType, bytes] = {}
    for app_type, suffix in ((AppType.STANDARD, ""), (AppType.LITE, "_LITE")):
        client_id = reader.get(f"GITHUB_APP_CLIENT_ID{suffix}")
        client_secret = reader.get(f"GITHUB_APP_CLIENT_SECRET{suffix}")
        if bool(client_id) != bool(client_secret):
            raise ConfigError(
                f"GITHUB_APP_CLIENT_ID{suffix} and GITHUB_APP_CLIENT_SECRET{suffix} "
                "must be set together"
            )
        if client_id and client_secret:
            apps[app_type] = GitHubApp(
                app_type=app_type.value, client_id=client_id, client_secret=client_secret
            )
        webhook_secret = reader.get(f"GITHUB_APP_WEBHOOK_SECRET{suffix}")
        if webhook_secret:
            webhook_secrets[app_type] = webhook_secret.encode()
    return apps, webhook_secrets


def _refuse_reused_secrets(
    keyring: Keyring,
    jwt: JwtConfig,
    webhook_secrets: Mapping[AppType, bytes],
    github_apps: Mapping[AppType, GitHubApp],
) -> None:
    """The encryption key is dedicated: one leaked secret must not open the vault."""
    others: list[tuple[str, bytes]] = []
    if jwt.secret is not None:
        others.append(("AUTH_JWT_SECRET", jwt.secret))
    suffix = {AppType.STANDARD: "", AppType.LITE: "_LITE"}
    for app_type, secret in webhook_secrets.items():
        others.append((f"GITHUB_APP_WEBHOOK_SECRET{suffix[app_type]}", secret))
    for app_type, app in github_apps.items():
        others.append((f"GITHUB_APP_CLIENT_SECRET{suffix[app_type]}", app.client_secret.encode()))
    for name, secret in others:
        candidates = [secret]
        decoded = _b64_or_none(secret)
        if decoded is not None:
            candidates.append(decoded)
        if any(keyring.contains_secret(candidate) for candidate in candidates):
            raise ConfigError(
                f"USER_GH_APP_TOKEN_ENCRYPTION_KEY must be a dedicated key: it equals {name}"
            )


def _b64_or_none(value: bytes) -> bytes | None:
    """`value` read as base64 the way keys are (standard or urlsafe, padding optional)."""
    text = value.strip().translate(bytes.maketrans(b"-_", b"+/"))
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
