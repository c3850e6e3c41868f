"""The lean path: a document the schema has already validated, run without Strawberry's
per-request machinery.

For every operation Strawberry's `Schema.execute` builds the schema's
extensions anew, enters a context manager per hook for each of four phases,
looks the document up in the parser and validation caches, builds a
middleware manager and converts the result for the extensions to read. For
a document this schema has parsed and validated before, the same steps are
the calls below, each made once: the variables checked (the function
CheckVariables calls), graphql-core's `execute` on the schema Strawberry
built, with Strawberry's execution context class (so Strawberry's resolvers,
argument conversion and permission classes run as on its own path), errors
logged, the observers told (access log, metrics), errors rewritten for the
client (the functions RedactErrors and `Schema.process_errors` call).

Whatever this module does not take stays on Strawberry's path: documents it
has not seen validate, subscriptions, and schemas configured with something
it does not do (custom directives, resolver middleware, batching,
incremental delivery, field suggestions removed by Strawberry).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeGuard

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
)
from strawberry.execution import optimized_is_awaitable
from strawberry.types import ExecutionResult as StrawberryResult

from server.graphql.context import Context
from server.graphql.errors import client_errors, log_errors
from server.graphql.observers import OperationOutcome
from server.graphql.schema import Schema
from server.graphql.types import graphql_core_schema
from server.graphql.variables import variable_errors

# A subscription over HTTP streams (or is refused): Strawberry's path.
LEAN_OPERATION_TYPES = frozenset({OperationType.QUERY, OperationType.MUTATION})


class LeanDocuments(Enum):
    """Which documents the lean path takes."""

    # None: every request goes Strawberry's way (the reference the lean path is tested against).
    NONE = "none"
    # Documents an earlier request parsed and validated without an error. A document
    # seen for the first time goes Strawberry's way, which fills the cache.
    VALIDATED = "validated"
    # Also documents seen for the first time, parsed and validated here by the same
    # cache and rules (the test suite runs so, to go through the lean path throughout).
    ALL = "all"


@dataclass(frozen=True, slots=True)
class LeanOperation:
    document: DocumentNode
    # The name Strawberry executes and reports: the one given, or the first operation's.
    name: str | None


def supports(schema: Schema) -> bool:
    """Whether the lean path does everything Strawberry's would for `schema`."""
    config = schema.config
    return (
        not schema.directives
        and config.batching_config is None
        and not config.enable_experimental_incremental_execution
        and not config.disable_field_suggestions
        and not any(extension._implements_resolve() for extension in schema.get_extensions())
    )


class LeanExecution:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.core = graphql_core_schema(schema)

    def operation(
        self, query: str, operation_name: str | None, documents: LeanDocuments
    ) -> LeanOperation | None:
        """The operation to run lean, or None for Strawberry's path."""
        schema = self.schema
        document = schema.documents.valid(query, schema.validation_rules)
        if document is None and documents is LeanDocuments.ALL:
            document = self._prepare(query)
        if document is None:
            return None
        definition = _operation(document, operation_name)
        if definition is None or definition.operation not in LEAN_OPERATION_TYPES:
            # No such operation: Strawberry answers 400.
            return None
        if operation_name is None and definition.name is not None:
            operation_name = definition.name.value
        return LeanOperation(document, operation_name)

    async def execute(
        self,
        operation: LeanOperation,
        variables: dict[str, Any] | None,
        context: Context,
        extensions: dict[str, Any] | None,
    ) -> StrawberryResult:
        """The result the client gets: its errors rewritten, logged and observed as
        Strawberry's path would."""
        schema = self.schema
        started = time.perf_counter()
        invalid = (
            variable_errors(self.core, operation.document, operation.name, variables)
            if variables
            else []
        )
        if invalid:
            result = ExecutionResult(data=None, errors=invalid)
        else:
            try:
                executed = execute(
                    self.core,
                    operation.document,
                    context_value=context,
                    variable_values=variables,
                    operation_name=operation.name,
                    executor_class=schema.execution_context_class,
                    is_awaitable=_is_awaitable,
                    operation_extensions=extensions,
                )
                result = executed if isinstance(executed, ExecutionResult) else await executed
            except Exception as exc:  # noqa: BLE001 -- graphql-core returns field errors
                # Not reached by any known request: graphql-core turns resolver errors into
                # field errors. Should it raise, the error is logged and masked like any
                # unexpected one (Strawberry's path would answer with its raw message).
                result = ExecutionResult(
                    data=None, errors=[GraphQLError(str(exc), original_error=exc)]
                )
        errors: list[GraphQLError] = result.errors or []
        if errors:
            log_errors(errors, request_id=context.request_id)
        outcome = OperationOutcome(
            context=context,
            operation_name=operation.name,
            document=operation.document,
            errors=errors,
            seconds=time.perf_counter() - started,
        )
        for observer in schema.observers:
            observer.operation_done(outcome)
        if errors:
            errors = client_errors(
                errors, request_id=context.request_id, production=schema.production
            )
        return StrawberryResult(data=result.data, errors=errors or None)

    def _prepare(self, query: str) -> DocumentNode | None:
        schema = self.schema
        try:
            document = schema.documents.parse(query)
        except GraphQLError:
            return None
        errors = schema.documents.validate(
            self.core, document, schema.validation_rules, schema.validate
        )
        return None if errors else document


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    # Strawberry's faster check, which it hands graphql-core too, with the type it declares.
    return optimized_is_awaitable(value)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    """The operation Strawberry picks: the one of that name, or the first."""
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if name is None or (definition.name is not None and definition.name.value == name):
            return definition
    return None
