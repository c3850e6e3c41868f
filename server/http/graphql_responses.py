"""GraphQL results as HTTP responses, by the GraphQL-over-HTTP specification.

A client names the media type it reads in `Accept`:
`application/graphql-response+json`, whose status code tells a request
refused before execution (400, and no `data` entry) from a result (200), or
`application/json`, the older type, answered 200 for every well-formed
request. Under both, `data` is absent when nothing was executed, and an
outage of something ghvault depends on is 503 with `Retry-After`, so that
clients retry rather than report a bug.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphql import GraphQLError

from server.domain.enums import RequestErrorCode

GRAPHQL_RESPONSE_MEDIA_TYPE = "application/graphql-response+json"
JSON_MEDIA_TYPE = "application/json"
# How long a client should wait before retrying after an outage: about what a
# database failover or a restart of the server takes.
RETRY_AFTER_SECONDS = 5

_EXACT, _SUBTYPE_WILDCARD, _WILDCARD = 3, 2, 1


def _ranges(accept: str) -> list[tuple[str, float]]:
    """The media ranges of an Accept header with their quality, lower-cased."""
    ranges = []
    for item in accept.split(","):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        if media_range:
            ranges.append((media_range.lower(), quality))
    return ranges


def _preference(media_type: str, ranges: Sequence[tuple[str, float]]) -> tuple[float, int]:
    """The quality the most specific matching range gives `media_type`, and how specific."""
    kind = media_type.split("/")[0]
    best = (0.0, 0)
    for media_range, quality in ranges:
        if media_range == media_type:
            specificity = _EXACT
        elif media_range == f"{kind}/*":
            specificity = _SUBTYPE_WILDCARD
        elif media_range == "*/*":
            specificity = _WILDCARD
        else:
            continue
        if specificity > best[1]:
            best = (quality, specificity)
    return best


def negotiate(accept: str | None) -> str | None:
    """The media type to answer in; None when `accept` allows neither JSON type.

    Without an Accept header (or with `*/*`) the answer is application/json,
    which every client reads; application/graphql-response+json when the
    client names it and prefers it at least as much.
    """
    if not accept or not accept.strip():
        return JSON_MEDIA_TYPE
    ranges = _ranges(accept)
    graphql_quality, graphql_specificity = _preference(GRAPHQL_RESPONSE_MEDIA_TYPE, ranges)
    json_quality, _ = _preference(JSON_MEDIA_TYPE, ranges)
    if graphql_quality == json_quality == 0:
        return None
    if graphql_quality > json_quality or (
        graphql_quality == json_quality and graphql_specificity == _EXACT
    ):
        return GRAPHQL_RESPONSE_MEDIA_TYPE
    return JSON_MEDIA_TYPE


def is_request_error(data: object, errors: Sequence[GraphQLError] | None) -> bool:
    """True when the request was refused before execution: its result has no `data` entry.

    Errors raised while executing (field errors) always carry a path; those
    raised before (parsing, validation, variable coercion) never do.
    """
    return data is None and bool(errors) and all(error.path is None for error in errors or ())


def _codes(body: Mapping[str, Any]) -> set[object]:
    return {
        (error.get("extensions") or {}).get("code")
        for error in body.get("errors") or ()
        if isinstance(error, Mapping)
    }


def status_for(body: Mapping[str, Any], media_type: str) -> int:
    """The HTTP status of a GraphQL response body in `media_type`."""
    codes = _codes(body)
    if RequestErrorCode.UNAVAILABLE.value in codes:
        return 503
    if media_type == GRAPHQL_RESPONSE_MEDIA_TYPE and "data" not in body:
        return 500 if RequestErrorCode.INTERNAL.value in codes else 400
    return 200


def retry_headers(status: int) -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else {}


def error_body(message: str, **extensions: object) -> dict[str, object]:
    """A response body holding one request error (and so no `data`)."""
    error: dict[str, object] = {"message": message}
    if extensions:
        error["extensions"] = extensions
    return {"errors": [error]}
