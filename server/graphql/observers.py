"""Who is told of each GraphQL operation once it ends: the access log, the metrics.

Both paths tell them the same facts: Strawberry's through the extension
below, the lean path (server.graphql.lean) by calling them itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension


@dataclass(frozen=True, slots=True)
class OperationOutcome:
    context: object  # the resolvers' context (server.graphql.context.Context), if any
    # The operation's name as Strawberry resolves it: the one given, or the first's.
    operation_name: str | None
    # The parsed document once it validated; None when it did not get that far.
    document: DocumentNode | None
    # As the operation ended, before they are rewritten for the client.
    errors: Sequence[GraphQLError]
    seconds: float


class OperationObserver(Protocol):
    def operation_done(self, outcome: OperationOutcome) -> None: ...


class ObserveOperations(SchemaExtension):
    """Tells `observers` of each operation Strawberry runs."""

    def __init__(self, observers: Sequence[OperationObserver]) -> None:
        self.observers = observers
        self.executed = False

    def on_execute(self) -> Iterator[None]:
        # Reached only by a document that parsed and validated.
        self.executed = True
        yield

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        outcome = OperationOutcome(
            context=context.context,
            operation_name=context.operation_name,
            document=context.graphql_document if self.executed else None,
            errors=getattr(context.result, "errors", None) or (),
            seconds=time.perf_counter() - started,
        )
        for observer in self.observers:
            observer.operation_done(outcome)
