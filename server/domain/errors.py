"""Outcomes that are not successes.

`Refusal` is an expected outcome returned as data (the API's
`OperationError`). `InvalidInput` is raised: the API turns it into a
top-level error with code INVALID_INPUT.
"""

from dataclasses import dataclass

from server.domain.enums import ErrorCode


@dataclass(frozen=True)
class Refusal:
    code: ErrorCode
    message: str
    field: str | None = None


class InvalidInput(Exception):
    """An argument is out of range or malformed; the message says which, never its value."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


NO_TOKEN_STORED = Refusal(
    ErrorCode.NOT_CONNECTED, "No GitHub token is stored for this user and app type."
)
TOKEN_REVOKED = Refusal(
    ErrorCode.TOKEN_REVOKED, "The GitHub token was revoked; the user must connect again."
)
