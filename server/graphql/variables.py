"""Variables are checked before execution, and errors about them never quote them.

graphql-core's own messages quote the bad value, shortened for long ones
(`'ghu_AAAA...ZZZZ'`): whatever part of a secret sits past the cut can no
longer be recognised and redacted. These messages say where the bad value
is and what was expected instead, so there is nothing to redact.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLInputType,
    GraphQLSchema,
    Undefined,
    VariableDefinitionNode,
    coerce_input_value,
    get_named_type,
    get_nullable_type,
    is_input_object_type,
    is_input_type,
    is_list_type,
    is_non_null_type,
    is_required_input_field,
    type_from_ast,
    validate_input_value,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension

from server.graphql.types import graphql_core_schema

Path = list[str | int]


def _type_at(type_: GraphQLInputType, path: Path) -> GraphQLInputType:
    for part in path:
        nullable = get_nullable_type(type_)
        if isinstance(part, int) and is_list_type(nullable):
            type_ = nullable.of_type
        elif isinstance(part, str) and is_input_object_type(nullable) and part in nullable.fields:
            type_ = nullable.fields[part].type
    return type_


def _value_at(value: Any, path: Path) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(value, list) and part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict):
            value = value.get(part)
    return value


def _problem(value: Any, type_: GraphQLInputType) -> str:
    """What is wrong, in terms of the schema only."""
    named = get_named_type(type_)
    if value is None and is_non_null_type(type_):
        return f"expected {type_}, found null"
    if is_input_object_type(named) and isinstance(value, dict):
        missing = [
            name
            for name, field in named.fields.items()
            if name not in value and is_required_input_field(field)
        ]
        if missing:
            return f"{named.name} requires " + ", ".join(f"'{name}'" for name in missing)
        if any(name not in named.fields for name in value):
            return f"{named.name} has no field of one of the names given"
    return f"expected {type_}"


def _where(name: str, path: Path) -> str:
    return name + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _errors_for(
    name: str, definition: VariableDefinitionNode, type_: GraphQLInputType, value: Any
) -> list[GraphQLError]:
    errors: dict[str, GraphQLError] = {}

    def on_error(_error: GraphQLError, path: Path) -> None:
        where = _where(name, path)
        if where not in errors:
            problem = _problem(_value_at(value, path), _type_at(type_, path))
            errors[where] = GraphQLError(
                f"Variable '${name}' has an invalid value at '{where}': {problem}.", definition
            )

    validate_input_value(value, type_, on_error, hide_suggestions=True)
    return list(errors.values())


def variable_errors(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any],
) -> list[GraphQLError]:
    """One error per bad place in the given variables; none for absent ones.

    Absent variables (defaults, "was not provided") are left to graphql-core,
    whose messages about them hold no value.
    """
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return []
    errors: list[GraphQLError] = []
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        type_ = type_from_ast(schema, definition.type)
        if name not in variables or type_ is None or not is_input_type(type_):
            continue
        if coerce_input_value(variables[name], type_) is Undefined:
            errors += _errors_for(name, definition, type_, variables[name])
    return errors


class CheckVariables(SchemaExtension):
    """Refuse bad variables before execution, with the messages above."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None and context.variables:
            errors = variable_errors(
                graphql_core_schema(context.schema),
                context.graphql_document,
                context.operation_name,
                context.variables,
            )
            if errors:
                # Strawberry does not execute when an extension has set the result.
                context.result = ExecutionResult(data=None, errors=errors)
        yield
