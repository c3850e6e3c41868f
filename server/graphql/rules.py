"""Validation rules of ghvault's own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphql import (
    ArgumentNode,
    GraphQLError,
    Node,
    ObjectFieldNode,
    StringValueNode,
    ValidationRule,
    VariableDefinitionNode,
)

from server.domain.enums import RequestErrorCode
from server.text import UNSTORABLE_TEXT, is_storable


class NoUnstorableText(ValidationRule):
    """A string literal no database can store (`\\u0000`) is refused before anything runs.

    graphql-core already refuses surrogates in literals; a NUL it accepts.
    Variables are checked where the request body is decoded.
    """

    def enter_string_value(
        self,
        node: StringValueNode,
        _key: Any,
        parent: Node | Sequence[Node] | None,
        _path: Any,
        ancestors: Sequence[Node | Sequence[Node]],
    ) -> None:
        if is_storable(node.value):
            return
        where = _argument_path([*ancestors, parent] if parent is not None else ancestors)
        self.report_error(
            GraphQLError(
                f"String values must not contain {UNSTORABLE_TEXT} (found in '{where}').",
                node,
                extensions={"code": RequestErrorCode.INVALID_INPUT.value, "field": where},
            )
        )


def _argument_path(enclosing: Sequence[Node | Sequence[Node]]) -> str:
    """The argument (or variable default) holding the literal, e.g. `input.email`."""
    names = []
    for ancestor in enclosing:
        if isinstance(ancestor, ArgumentNode | ObjectFieldNode):
            names.append(ancestor.name.value)
        elif isinstance(ancestor, VariableDefinitionNode):
            names.append("$" + ancestor.variable.name.value)
    return ".".join(names) or "a string value"
