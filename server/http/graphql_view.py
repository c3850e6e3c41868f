"""The /graphql view: callers are identified before anything of theirs is read.

An anonymous POST is answered from its headers alone: its body is never read,
parsed or validated, so a stranger cannot make the server do GraphQL work.
Bodies are decoded with bounds (UTF-8, nesting, only storable text) so malformed input is
a 4xx saying what was wrong, never a 500.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TypeGuard

from aiohttp import web
from cross_web import HTTPException
from strawberry.aiohttp.views import GraphQLView
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UnsetType

from server.auth import AuthenticationError, Principal, authenticate, bearer_token
from server.domain.enums import RequestErrorCode
from server.graphql.context import Context
from server.graphql.errors import unauthenticated
from server.http.appkeys import (
    CLOCK,
    GITHUB,
    JWKS,
    KNOWN_USERS,
    METRICS,
    PRINCIPAL,
    REFRESH_LOCKS,
    REQUEST_ID,
    SETTINGS,
    TOKEN_CHANGES,
    VERIFIED_TOKENS,
)
from server.http.request_context import annotate
from server.http.websocket import (
    EXPIRY_TIMER,
    WebSocketAdapter,
    close_at_expiry,
    connection_authorization,
    expiry_of,
)
from server.text import UNSTORABLE_TEXT, is_storable

logger = logging.getLogger("ghvault.app")

# No GraphQL request of this API nests deeper; anything deeper is refused
# before graphql-core walks it recursively.
MAX_JSON_DEPTH = 32
# The metrics' operation label of a request refused before its document was read.
NOT_PARSED = "not_parsed"
UNAUTHENTICATED = RequestErrorCode.UNAUTHENTICATED.value
JSON_MEDIA_TYPE = "application/json"


def unauthenticated_response() -> web.Response:
    """HTTP 401 with the GraphQL error body an anonymous operation used to get."""
    error = unauthenticated()
    body = {
        "data": None,
        "errors": [{"message": error.message, "extensions": error.extensions}],
    }
    return web.json_response(body, status=401, headers={"WWW-Authenticate": "Bearer"})


def check_json_shape(value: object) -> None:
    """Refuse text no database can store and nesting beyond MAX_JSON_DEPTH, without recursing.

    Every string of the body is checked, the document and every variable
    alike, so no argument, now or added later, can bring such text to storage.
    """
    # (item, where it is, whether it is the name of a member rather than a value)
    pending: list[tuple[object, JsonPath, bool]] = [(value, (), False)]
    while pending:
        item, path, is_name = pending.pop()
        if isinstance(item, str):
            if not is_storable(item):
                where = f"in a name in {_path(path)}" if is_name else f"at {_path(path)}"
                raise HTTPException(
                    400, f"GraphQL requests must not contain {UNSTORABLE_TEXT} (found {where})"
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if len(path) >= MAX_JSON_DEPTH:
            raise HTTPException(
                400, f"GraphQL requests must not nest deeper than {MAX_JSON_DEPTH} levels"
            )
        if isinstance(item, list):
            pending.extend((child, (*path, index), False) for index, child in enumerate(item))
            continue
        for key, child in item.items():
            pending.append((key, path, True))
            pending.append((child, (*path, key), False))


JsonPath = tuple[str | int, ...]
# Names as GraphQL spells variables and input fields, as long as this schema's: no
# other caller text (a token used as a name, say) is echoed.
_ECHOED_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,31}")


def _path(path: JsonPath) -> str:
    """A place in the body, e.g. `variables.input.email`, in the schema's names only."""
    where = "".join(
        f"[{step}]"
        if isinstance(step, int)
        else f".{step}"
        if _ECHOED_NAME.fullmatch(step)
        else ".<name>"
        for step in path
    ).lstrip(".")
    return where or "the request"


async def authenticate_bearer(app: web.Application, authorization: str) -> Principal:
    """The principal of a bearer JWT, by the same rules for requests and sockets."""
    key = await app[JWKS].key_for(bearer_token(authorization)) if JWKS in app else None
    return authenticate(authorization, app[SETTINGS].jwt, key=key, cache=app[VERIFIED_TOKENS])


class GhvaultGraphQLView(GraphQLView[Context, None]):
    websocket_adapter_class = WebSocketAdapter

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            # GraphiQL's page, or a subscription socket (authenticated in connection_init).
            try:
                return await super().__call__(request)
            finally:
                expiry = request.get(EXPIRY_TIMER)
                if expiry is not None:
                    expiry.cancel()
        started = time.perf_counter()
        principal = await self._principal(request)
        if principal is None:
            # The root field is unknown: the document is never parsed.
            refused = request.app[METRICS].graphql.labels(NOT_PARSED, UNAUTHENTICATED)
            refused.observe(time.perf_counter() - started)
            return unauthenticated_response()
        if request.content_type.lower() != JSON_MEDIA_TYPE:
            # Browsers send form and text bodies cross-site without asking (CSRF).
            return web.Response(
                status=415, text=f"GraphQL requests must be sent as {JSON_MEDIA_TYPE}"
            )
        request[PRINCIPAL] = principal
        return await super().__call__(request)

    async def _principal(self, request: web.Request) -> Principal | None:
        app = request.app
        authorization = request.headers.get("Authorization")
        if not authorization:
            return None
        try:
            principal = await authenticate_bearer(app, authorization)
        except AuthenticationError as exc:
            logger.info("request %s: rejected credentials: %s", request[REQUEST_ID], exc)
            return None
        annotate(principal_id=principal.id, principal_role=principal.role.value)
        return principal

    def is_websocket_request(self, request: web.Request) -> TypeGuard[web.Request]:
        # Strawberry builds a WebSocketResponse and tries a handshake on every
        # request to find out; a plain POST has no Upgrade header to begin with.
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return False
        return super().is_websocket_request(request)

    def is_websocket_origin_allowed(self, request: web.Request, origin: str) -> bool:
        # Sockets are authenticated by the token in connection_init, never by
        # cookies: a page on another origin (the frontend) gains nothing it did
        # not already hold, so every origin may connect.
        return True

    async def on_ws_connect(self, context: Context) -> UnsetType:
        """Nothing of a socket is executed before connection_init carries a valid JWT."""
        try:
            authorization = connection_authorization(context.connection_params)
            principal = await authenticate_bearer(context.request.app, authorization)
            expires_at = expiry_of(authorization)
        except AuthenticationError as exc:
            logger.info("request %s: websocket refused: %s", context.request_id, exc)
            raise ConnectionRejectionError from None
        context.principal = principal
        annotate(principal_id=principal.id, principal_role=principal.role.value)
        assert isinstance(context.response, web.WebSocketResponse)
        context.request[EXPIRY_TIMER] = close_at_expiry(context.response, expires_at)
        return UnsetType()  # UNSET, typed: acknowledged without a payload

    def decode_json(self, data: str | bytes) -> object:
        try:
            decoded = json.loads(data)
        except UnicodeDecodeError:
            raise HTTPException(400, "The request body is not valid UTF-8") from None
        except RecursionError:
            raise HTTPException(
                400, f"GraphQL requests must not nest deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        except ValueError:
            # Not JSON, or a number too long to convert.
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if not isinstance(decoded, dict | list):
            # Strawberry reads fields off the body; `null` or `1` would be a 500.
            raise HTTPException(400, "A GraphQL request must be a JSON object")
        check_json_shape(decoded)
        return decoded

    async def get_context(self, request: web.Request, response: web.StreamResponse) -> Context:
        app = request.app
        return Context(
            request=request,
            response=response,
            settings=app[SETTINGS],
            clock=app[CLOCK],
            request_id=request[REQUEST_ID],
            principal=request.get(PRINCIPAL),
            github=app.get(GITHUB),
            known_users=app[KNOWN_USERS],
            refresh_locks=app[REFRESH_LOCKS],
            token_changes=app[TOKEN_CHANGES],
        )
