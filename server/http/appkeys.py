"""Typed keys for what the application and each request carry."""

from aiohttp import web
from piccolo.engine.base import Engine

from server.auth import Principal
from server.clock import Clock
from server.config import Settings
from server.domain.changes import TokenChanges
from server.domain.locks import KeyedLocks
from server.domain.rate_limits import RateLimit
from server.github import GitHubClient
from server.http.metrics import Metrics
from server.jwks import JwksKeys
from server.jwt_cache import VerifiedTokens

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey[Clock]("clock")
ENGINE = web.AppKey("engine", Engine)
GITHUB = web.AppKey("github", GitHubClient)
KNOWN_USERS = web.AppKey("known_users", set[str])
REFRESH_LOCKS = web.AppKey("refresh_locks", KeyedLocks)
REJECTION_REPORTS = web.AppKey("rejection_reports", RateLimit)
METRICS = web.AppKey("metrics", Metrics)
JWKS = web.AppKey("jwks", JwksKeys)
TOKEN_CHANGES = web.AppKey("token_changes", TokenChanges)
VERIFIED_TOKENS = web.AppKey("verified_tokens", VerifiedTokens)
# The subscription sockets open now, closed with "going away" at shutdown.
OPEN_SOCKETS = web.AppKey("open_sockets", set[web.WebSocketResponse])

REQUEST_ID = web.RequestKey("request_id", str)
# Who sent the request: the peer, or the client its trusted proxies name.
CLIENT_ADDRESS = web.RequestKey("client_address", str)
PRINCIPAL = web.RequestKey("principal", Principal)
# A GraphQL operation's name, outcome and principal, for the request's access line.
OPERATION_FIELDS = web.RequestKey("operation_fields", dict[str, object])
