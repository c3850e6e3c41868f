"""Logging: one JSON object per line, every handler behind the redaction filter."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from server.http.appkeys import CLIENT_ADDRESS, OPERATION_FIELDS, REQUEST_ID
from server.http.request_context import current_fields
from server.redaction import RedactingFilter, install_log_redaction, redact

# Fields a record may carry through `extra=`; copied into the JSON line when set.
CONTEXT_FIELDS = (
    "request_id",
    "principal_id",
    "principal_role",
    "operation",
    "outcome",
    "graphql_ms",
    "duration_ms",
    "method",
    "path",
    "status",
    "client",
    "address",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # Tells apart the processes of `ghvault serve --workers N`.
            "pid": record.process,
        }
        for name, value in current_fields().items():
            line[name] = value
        for name in CONTEXT_FIELDS:
            extra = getattr(record, name, None)
            if extra is not None:
                line[name] = extra
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        # The filter has seen the record, not what is added here (the request
        # context, a principal id taken from a JWT): the whole line is redacted,
        # every field at once. The patterns read JSON-escaped text, and no
        # replacement can cut an escape in two or cross into another field.
        return redact(json.dumps(line, default=str))


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A handler writing JSON lines, redacted before anything is formatted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.handlers[:] = [json_handler()]
    root.setLevel(level)
    # Libraries' warnings (Piccolo warns when its database is unreachable) become
    # JSON lines too, behind the same redaction, instead of raw text on stderr.
    logging.captureWarnings(True)
    # Handlers that libraries attached to their own loggers get the filter too.
    install_log_redaction()


class RedactingAccessLogger(AbstractAccessLogger):
    """The access log, without query strings' secrets (OAuth codes, tokens).

    The one line of a request: a GraphQL request's line also carries its
    operation's name, outcome and principal (server.graphql.operation_log).
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        path = redact(request.path_qs)
        extra: dict[str, object] = {
            "request_id": request.get(REQUEST_ID),
            "client": request.get(CLIENT_ADDRESS, request.remote),
            "method": request.method,
            "path": path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
        }
        operation = request.get(OPERATION_FIELDS)
        if operation is None:
            self.logger.info("%s %s %s", request.method, path, response.status, extra=extra)
            return
        extra.update(operation)
        self.logger.info(
            "%s %s %s graphql %s: %s",
            request.method,
            path,
            response.status,
            operation["operation"],
            operation["outcome"],
            extra=extra,
        )
