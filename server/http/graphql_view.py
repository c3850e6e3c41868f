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
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from strawberry.aiohttp.views import GraphQLView
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UnsetType

from server.auth import AuthenticationError, Principal, VerifiedToken, bearer_token, verify
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
    REJECTION_REPORTS,
    REQUEST_ID,
    SETTINGS,
    TOKEN_CHANGES,
    VERIFIED_TOKENS,
)
from server.http.connections import mark_busy, mark_idle
from server.http.graphql_responses import (
    GRAPHQL_RESPONSE_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    error_body,
    is_request_error,
    negotiate,
    retry_headers,
    status_for,
)
from server.http.request_context import annotate
from server.http.websocket import (
    EXPIRY_TIMER,
    WebSocketAdapter,
    close_at_expiry,
    connection_authorization,
    open_socket,
    socket_ended,
)
from server.http.ws_messages import GraphQLTransportWSHandler
from server.text import UNSTORABLE_TEXT, is_storable

logger = logging.getLogger("ghvault.app")

# No GraphQL request of this API nests deeper; anything deeper is refused
# before graphql-core walks it recursively.
MAX_JSON_DEPTH = 32
# Nor holds more arrays and objects (brackets in its strings counted too): a
# document has at most 200 selections (server/graphql/budget.py), so at most
# as many selection sets, and variables are a few. Counted on the raw text
# before decoding, since 64 KB of `[[],[],...]` is ~20,000 lists and ~30 ms of
# the event loop, which a stranger's socket could send again and again.
MAX_JSON_CONTAINERS = 1024
# The metrics' operation label of a request refused before its document was read.
NOT_PARSED = "not_parsed"
UNAUTHENTICATED = RequestErrorCode.UNAUTHENTICATED.value
# Subscriptions run on websockets only (graphql-transport-ws), never on a POST.
HTTP_OPERATIONS = frozenset({OperationType.QUERY, OperationType.MUTATION})
SUBSCRIPTION_OVER_POST = (
    "Subscriptions are served over the graphql-transport-ws protocol: "
    "open a websocket to this URL (any graphql-ws client) instead of POSTing them"
)
# The media type a POST is answered in, chosen from its Accept header.
MEDIA_TYPE = web.RequestKey("media_type", str)


def json_response(
    body: object, *, status: int, media_type: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, content_type=media_type, headers=headers)


def unauthenticated_response(media_type: str = JSON_MEDIA_TYPE) -> web.Response:
    """HTTP 401 with the GraphQL error an anonymous operation would get (nothing ran: no data)."""
    error = unauthenticated()
    body = error_body(error.message, **(error.extensions or {}))
    return json_response(
        body, status=401, media_type=media_type, headers={"WWW-Authenticate": "Bearer"}
    )


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


def opening_brackets(data: str | bytes) -> int:
    """How many arrays and objects `data` may hold at most (brackets in strings count too)."""
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{")
    return data.count("[") + data.count("{")


async def verify_bearer(app: web.Application, authorization: str) -> VerifiedToken:
    """A bearer JWT verified by the same rules, and the same code, for requests and sockets."""
    key = await app[JWKS].key_for(bearer_token(authorization)) if JWKS in app else None
    return verify(authorization, app[SETTINGS].jwt, key=key, cache=app[VERIFIED_TOKENS])


class GhvaultGraphQLView(GraphQLView[Context, None]):
    websocket_adapter_class = WebSocketAdapter
    graphql_transport_ws_handler_class = GraphQLTransportWSHandler

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            # GraphiQL's page, or a subscription socket (authenticated in connection_init).
            try:
                return await super().__call__(request)
            finally:
                socket_ended(request)
        started = time.perf_counter()
        media_type = negotiate(request.headers.get("Accept"))
        if media_type is None:
            message = f"GraphQL responses are {GRAPHQL_RESPONSE_MEDIA_TYPE} or {JSON_MEDIA_TYPE}"
            return json_response(error_body(message), status=406, media_type=JSON_MEDIA_TYPE)
        principal = await self._principal(request)
        if principal is None:
            # The root field is unknown: the document is never parsed.
            refused = request.app[METRICS].graphql.labels(NOT_PARSED, UNAUTHENTICATED)
            refused.observe(time.perf_counter() - started)
            return unauthenticated_response(media_type)
        if request.content_type.lower() != JSON_MEDIA_TYPE:
            # Browsers send form and text bodies cross-site without asking (CSRF).
            message = f"GraphQL requests must be sent as {JSON_MEDIA_TYPE}"
            return json_response(error_body(message), status=415, media_type=media_type)
        request[PRINCIPAL] = principal
        request[MEDIA_TYPE] = media_type
        try:
            return await self.run(request)
        except HTTPException as exc:
            return json_response(
                error_body(exc.reason), status=exc.status_code, media_type=media_type
            )

    async def _principal(self, request: web.Request) -> Principal | None:
        app = request.app
        authorization = request.headers.get("Authorization")
        if not authorization:
            return None
        try:
            principal = (await verify_bearer(app, authorization)).principal
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

    async def create_websocket_response(
        self, request: web.Request, subprotocol: str | None
    ) -> web.WebSocketResponse:
        limit = request.app[SETTINGS].graphql_limits.max_body_bytes
        socket = await open_socket(
            request, [subprotocol] if subprotocol else [], max_message_bytes=limit
        )
        # Until connection_init is accepted the socket may make room for others.
        mark_idle(request)
        return socket

    def is_websocket_origin_allowed(self, request: web.Request, origin: str) -> bool:
        # Sockets are authenticated by the token in connection_init, never by
        # cookies: a page on another origin (the frontend) gains nothing it did
        # not already hold, so every origin may connect.
        return True

    async def on_ws_connect(self, context: Context) -> UnsetType:
        """Nothing of a socket is executed before connection_init carries a valid JWT."""
        try:
            authorization = connection_authorization(context.connection_params)
            verified = await verify_bearer(context.request.app, authorization)
        except AuthenticationError as exc:
            logger.info("request %s: websocket refused: %s", context.request_id, exc)
            raise ConnectionRejectionError from None
        principal = context.principal = verified.principal
        annotate(principal_id=principal.id, principal_role=principal.role.value)
        mark_busy(context.request)
        assert isinstance(context.response, web.WebSocketResponse)
        context.request[EXPIRY_TIMER] = close_at_expiry(context.response, verified.expires_at)
        return UnsetType()  # UNSET, typed: acknowledged without a payload

    async def execute_single(
        self,
        request: web.Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: web.Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        if not isinstance(request_data.operation_name, str | None):
            raise HTTPException(400, "The GraphQL operation's `operationName` must be a string")
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=HTTP_OPERATIONS,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError:
            raise HTTPException(400, SUBSCRIPTION_OVER_POST) from None
        except CannotGetOperationTypeError:
            # A request error like any other, and one that does not echo the name.
            error = GraphQLError("operationName names no operation of the document")
            return ExecutionResult(data=None, errors=[error])
        except MissingQueryError:
            raise HTTPException(400, "No GraphQL query found in the request") from None

    async def process_result(
        self, request: web.Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        body = await super().process_result(request, result)
        if is_request_error(result.data, result.errors):
            # Nothing was executed, so there is no `data` to report, not even null.
            del body["data"]
        return body

    async def get_sub_response(self, request: web.Request) -> web.Response:
        response = web.Response()
        response.content_type = request.get(MEDIA_TYPE, JSON_MEDIA_TYPE)
        return response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: web.Response,
    ) -> web.Response:
        # Batched requests are refused while parsing: one response body, always.
        assert not isinstance(response_data, list)
        status = status_for(response_data, sub_response.content_type)
        sub_response.set_status(status)
        sub_response.headers.update(retry_headers(status))
        encoded = self.encode_json(response_data)
        sub_response.text = encoded.decode() if isinstance(encoded, bytes) else encoded
        return sub_response

    def decode_json(self, data: str | bytes) -> object:
        if opening_brackets(data) > MAX_JSON_CONTAINERS:
            raise HTTPException(
                400, f"GraphQL requests must not hold over {MAX_JSON_CONTAINERS} arrays and objects"
            )
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
            rejection_reports=app[REJECTION_REPORTS],
            token_changes=app[TOKEN_CHANGES],
        )
