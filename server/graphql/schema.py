"""The Strawberry schema, with ghvault's error handling and caches."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.types import ExecutionContext

from server.graphql.errors import RedactErrors, log_error
from server.graphql.mutations import Mutation
from server.graphql.queries import Query

CACHE_SIZE = 512


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Replaces Strawberry's default, which logs raw messages and tracebacks.
        context: Any = execution_context.context if execution_context else None
        request_id = getattr(context, "request_id", "-")
        for error in errors:
            log_error(error, request_id=request_id)


def create_schema(*, production: bool = False) -> Schema:
    return Schema(
        query=Query,
        mutation=Mutation,
        extensions=[
            lambda: ParserCache(maxsize=CACHE_SIZE),
            lambda: ValidationCache(maxsize=CACHE_SIZE),
            lambda: RedactErrors(production=production),
        ],
    )


def export_sdl() -> str:
    return create_schema().as_str() + "\n"
