"""graphql-transport-ws messages: their shape checked before Strawberry reads them.

Strawberry takes a message's fields as they come: a list where an object
belongs, a string payload, a list id (unhashable) or a numeric query end in
a traceback rather than a refusal. Every message is checked against the
shapes graphql-ws itself requires (its `validateMessage`); one that does
not fit closes the socket with 4400 (Bad Request) and one INFO line.
"""

from __future__ import annotations

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
)

from server.graphql.context import Context

# A client sends connection_init first, perhaps after a ping; a stranger's
# socket gets no more messages decoded than this (each up to the body limit)
# before it is closed, so it costs no more than a few anonymous requests.
MAX_MESSAGES_BEFORE_INIT = 8
# The only types a client sends; Strawberry answers others "Unknown message type".
WITH_OPTIONAL_PAYLOAD = frozenset({"connection_init", "ping", "pong"})
WITH_ID = frozenset({"subscribe", "complete"})
# A subscribe payload's optional members and the JSON type each must have.
SUBSCRIBE_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("variables", dict, "an object"),
    ("operationName", str, "a string"),
    ("extensions", dict, "an object"),
)


def message_problem(message: object) -> str | None:
    """What is wrong with the shape of a client's message, or None when nothing is."""
    if not isinstance(message, dict):
        return "a message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "a message must have a string type"
    if kind in WITH_OPTIONAL_PAYLOAD:
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            return f"a {kind} payload must be an object"
    elif kind in WITH_ID:
        operation_id = message.get("id")
        if not isinstance(operation_id, str) or not operation_id:
            return f"a {kind} message must have a non-empty string id"
        if kind == "subscribe":
            return _subscribe_payload_problem(message.get("payload"))
    else:
        return "unknown message type"
    return None


def _subscribe_payload_problem(payload: object) -> str | None:
    if not isinstance(payload, dict):
        return "a subscribe payload must be an object"
    if not isinstance(payload.get("query"), str):
        return "a subscribe payload must have a string query"
    for name, expected, described in SUBSCRIBE_OPTIONS:
        if payload.get(name) is not None and not isinstance(payload[name], expected):
            return f"a subscribe payload's {name} must be {described}"
    return None


class GraphQLTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    messages_before_init = 0

    async def handle_message(self, message: Message) -> None:
        if not self.connection_acknowledged:
            self.messages_before_init += 1
            if self.messages_before_init > MAX_MESSAGES_BEFORE_INIT:
                await self.handle_invalid_message("too many messages before connection_init")
                return
        problem = message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message["type"] == "connection_init" and message.get("payload") is None:
            # The protocol allows a null payload; without credentials it is refused (4403).
            credentials_missing: ConnectionInitMessage = {"type": "connection_init", "payload": {}}
            message = credentials_missing
        await super().handle_message(message)
