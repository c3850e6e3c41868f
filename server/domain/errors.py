"""Outcomes that are not successes.

`OperationError` is an expected outcome returned as data (the API's
`OperationError`). `Forbidden` and `InvalidInput` are raised: the API turns
them into top-level errors with codes FORBIDDEN and INVALID_INPUT.
"""

from dataclasses import dataclass

from server.domain.enums import ErrorCode


@dataclass(frozen=True)
class OperationError:
    code: ErrorCode
    message: str
    field: str | None = None


class Forbidden(Exception):
    """The principal may not do this; the message names no data."""


class InvalidInput(Exception):
    """An argument is out of range or malformed; the message says which, never its value."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
