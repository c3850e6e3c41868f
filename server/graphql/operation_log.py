"""What a GraphQL operation adds to its request's log line: name, outcome, principal.

The access log writes one line per request (server.http.logs); this
extension hands it the operation's facts instead of writing a second line,
as each line costs a record, a redaction pass, JSON and a write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from server.http.appkeys import OPERATION_FIELDS


class OperationLog(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        request = getattr(context.context, "request", None)
        if request is None:
            return
        result = context.result
        errors = len(getattr(result, "errors", None) or ())
        principal = getattr(context.context, "principal", None)
        request[OPERATION_FIELDS] = {
            "operation": context.operation_name or "-",
            "outcome": f"{errors} error(s)" if errors else "ok",
            "principal_id": principal.id if principal else None,
            "principal_role": principal.role.value if principal else None,
            "graphql_ms": round((time.perf_counter() - started) * 1000, 2),
        }
