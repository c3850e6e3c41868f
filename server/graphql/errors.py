"""Top-level GraphQL errors: codes for callers, redaction and masking for everyone.

Every error that leaves (message and extensions) goes through `redact`.
Expected errors keep their message and carry `extensions.code`; anything
else is unexpected: in production its message becomes "Unexpected error"
with the request id, and only the (redacted) log keeps the detail.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from server.domain.enums import RequestErrorCode
from server.domain.errors import InvalidInput
from server.github import GitHubUnavailable
from server.redaction import redact, redact_obj
from server.storage.outages import is_database_outage

logger = logging.getLogger("ghvault.graphql")

UNEXPECTED_MESSAGE = "Unexpected error"
UNAVAILABLE_MESSAGE = "Temporarily unavailable (the database or GitHub is out): retry later"
SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


class ApiError(GraphQLError):
    """An expected top-level error with a code."""

    def __init__(self, message: str, code: RequestErrorCode, **extensions: object) -> None:
        super().__init__(message, extensions={"code": code.value, **extensions})


def unauthenticated() -> ApiError:
    return ApiError(
        "Authentication required: send a valid bearer token.", RequestErrorCode.UNAUTHENTICATED
    )


def forbidden() -> ApiError:
    return ApiError("Not allowed for this principal.", RequestErrorCode.FORBIDDEN)


def _public(error: GraphQLError) -> tuple[str, dict[str, object]] | None:
    """Message and extensions of an expected error; None when it is unexpected."""
    original = error if isinstance(error, ApiError) else error.original_error
    if original is None:
        # Syntax and validation errors.
        return error.message, dict(error.extensions or {})
    if isinstance(original, GraphQLError):
        return original.message, dict(original.extensions or {})
    if isinstance(original, InvalidInput):
        field = {"field": original.field} if original.field else {}
        return str(original), {"code": RequestErrorCode.INVALID_INPUT.value, **field}
    return None


def _outage(error: GraphQLError) -> BaseException | None:
    """The exception behind `error` when it says something ghvault depends on is out."""
    original = error.original_error
    if original is None:
        return None
    if is_database_outage(original) or isinstance(original, GitHubUnavailable):
        return original
    return None


def client_error(error: GraphQLError, *, request_id: str, production: bool) -> GraphQLError:
    """What the client may see of `error`: redacted, and masked when unexpected."""
    public = _public(error)
    if public is None and _outage(error) is not None:
        public = (
            UNAVAILABLE_MESSAGE,
            {
                "code": RequestErrorCode.UNAVAILABLE.value,
                "requestId": request_id,
            },
        )
    if public is None:
        message = UNEXPECTED_MESSAGE if production else f"{UNEXPECTED_MESSAGE}: {error.message}"
        public = message, {"code": RequestErrorCode.INTERNAL.value, "requestId": request_id}
    message, extensions = public
    if production:
        # "Did you mean ...?" would map the schema for someone without introspection.
        message = SUGGESTION.sub("", message)
    return GraphQLError(
        message=redact(message),
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=redact_obj(extensions) or None,
    )


def log_error(error: GraphQLError, *, request_id: str) -> None:
    """Unexpected errors with their traceback, expected ones as a line; all redacted."""
    path = ".".join(str(part) for part in error.path or ())
    if _public(error) is not None:
        logger.info("request %s: %s at %s", request_id, redact(error.message), path or "-")
        return
    outage = _outage(error)
    if outage is not None:
        # One line per request while the outage lasts, not a traceback each.
        detail = ": ".join(filter(None, (type(outage).__name__, str(outage))))
        logger.warning("request %s: unavailable at %s: %s", request_id, path or "-", redact(detail))
        return
    original = error.original_error or error
    detail = "".join(traceback.format_exception(original))
    logger.error("request %s: unexpected error at %s\n%s", request_id, path or "-", redact(detail))


@runtime_checkable
class _WithErrors(Protocol):
    """What every result Strawberry hands its extensions has (graphql-core's or its own)."""

    errors: list[GraphQLError] | None


class RedactErrors(SchemaExtension):
    """Rewrite the result's errors into their client-facing form."""

    def __init__(self, *, production: bool) -> None:
        self.production = production

    def on_operation(self) -> Iterator[None]:
        yield
        self._rewrite(self.execution_context.result)

    def on_stream_result(self, result: object) -> Iterator[None]:
        # A subscription's results go out one by one, before the operation ends.
        self._rewrite(result)
        yield

    def _rewrite(self, result: object) -> None:
        if not isinstance(result, _WithErrors) or not result.errors:
            return
        request_id = getattr(self.execution_context.context, "request_id", "-")
        result.errors = [
            client_error(error, request_id=request_id, production=self.production)
            for error in result.errors
        ]
