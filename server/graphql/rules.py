"""Validation rules of ghvault's own."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule


class NoNulCharacters(ValidationRule):
    """A NUL in a string literal (written `\\u0000`) is refused before anything runs.

    No id, login, token or URL holds one, and PostgreSQL cannot compare one.
    Variables are checked where the request body is decoded.
    """

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if "\x00" in node.value:
            self.report_error(GraphQLError("String values must not contain NUL characters.", node))
