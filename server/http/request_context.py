"""What the current request is (its id, its principal), for every log line it causes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

# Where a response carries its request's id (set by the request id middleware).
REQUEST_ID_HEADER = "X-Request-Id"

_current: ContextVar[dict[str, str] | None] = ContextVar("ghvault_request", default=None)


@contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    token = _current.set({"request_id": request_id})
    try:
        yield
    finally:
        _current.reset(token)


def annotate(**fields: str) -> None:
    """Add facts (e.g. the principal) to the current request's log context."""
    current = _current.get()
    if current is not None:
        current.update(fields)


def current_fields() -> Mapping[str, str]:
    return _current.get() or {}
