"""What a GraphQL operation adds to its request's log line: name, outcome, principal.

The access log writes one line per request (server.http.logs); this
observer hands it the operation's facts instead of writing a second line,
as each line costs a record, a redaction pass, JSON and a write.
"""

from __future__ import annotations

from server.graphql.observers import OperationOutcome
from server.http.appkeys import OPERATION_FIELDS


class OperationLog:
    def operation_done(self, outcome: OperationOutcome) -> None:
        request = getattr(outcome.context, "request", None)
        if request is None:
            return
        errors = len(outcome.errors)
        principal = getattr(outcome.context, "principal", None)
        request[OPERATION_FIELDS] = {
            "operation": outcome.operation_name or "-",
            "outcome": f"{errors} error(s)" if errors else "ok",
            "principal_id": principal.id if principal else None,
            "principal_role": principal.role.value if principal else None,
            "graphql_ms": round(outcome.seconds * 1000, 2),
        }
