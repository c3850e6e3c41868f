"""One log line per GraphQL operation: its name, outcome and duration."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

logger = logging.getLogger("ghvault.graphql.operation")


class OperationLog(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        result = context.result
        errors = len(getattr(result, "errors", None) or ())
        name = context.operation_name or "-"
        principal = getattr(context.context, "principal", None)
        logger.info(
            "graphql %s: %s",
            name,
            f"{errors} error(s)" if errors else "ok",
            extra={
                "request_id": getattr(context.context, "request_id", None),
                "operation": name,
                "principal_id": principal.id if principal else None,
                "principal_role": principal.role.value if principal else None,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
