"""The Strawberry schema, with ghvault's error handling, limits and caches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import strawberry
from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.schema import validate_document
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from server.config import GraphQLLimits
from server.github_proxy import mutations as github_capabilities
from server.graphql import (
    audit,
    checkout,
    connect,
    disconnect,
    purge,
    rejection,
    stats,
    status,
    tokens,
    users,
)
from server.graphql.budget import DocumentBudget
from server.graphql.errors import RedactErrors, log_error
from server.graphql.operation_log import OperationLog
from server.graphql.rules import NoUnstorableText
from server.graphql.subscriptions import Subscription
from server.graphql.types import graphql_core_schema
from server.graphql.variables import CheckVariables

# Parsed and validated documents are kept for texts up to this many characters:
# the operations of a frontend or a worker are a few hundred, GraphiQL's
# introspection query is 1.6k. A document's syntax tree takes about 350 bytes
# per token, so caching what an attacker can send (64 KiB, thousands of tokens,
# a new text each time) would hold hundreds of megabytes and make every full
# garbage collection of the process pause for 100 ms and more.
CACHED_DOCUMENT_CHARS = 2048
CACHE_SIZE = 256

# One module per capability; the order here is the order of fields in the SDL.
Query = merge_types("Query", (users.Query, status.Query, audit.Query, stats.Query))
Mutation = merge_types(
    "Mutation",
    (
        tokens.Mutation,
        purge.Mutation,
        connect.Mutation,
        disconnect.Mutation,
        checkout.Mutation,
        rejection.Mutation,
        github_capabilities.Mutation,
    ),
)


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Replaces Strawberry's default, which logs raw messages and tracebacks.
        context: Any = execution_context.context if execution_context else None
        request_id = getattr(context, "request_id", "-")
        for error in errors:
            log_error(error, request_id=request_id)


Extension = Callable[[], SchemaExtension] | type[SchemaExtension]


Validate = Callable[
    [GraphQLSchema, DocumentNode, tuple[type[ASTValidationRule], ...]], list[GraphQLError]
]


def _cacheable(text: str) -> bool:
    return len(text) <= CACHED_DOCUMENT_CHARS


@lru_cache(maxsize=CACHE_SIZE)
def _cached_parse(query: str, **options: Any) -> DocumentNode:
    return parse(query, **options)


class SmallDocumentParserCache(ParserCache):
    """Strawberry's parser cache, for documents of at most CACHED_DOCUMENT_CHARS."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query or ""
        context.graphql_document = (_cached_parse if _cacheable(query) else parse)(
            query, **context.parse_options
        )
        yield


def bounded_validation(limits: GraphQLLimits) -> Validate:
    """graphql-core's validation behind the document budget, cached per small document."""
    budget = DocumentBudget(limits)

    def validate(
        schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
    ) -> list[GraphQLError]:
        refusal = budget.check(document)
        return [refusal] if refusal else validate_document(schema, document, rules)

    cached = lru_cache(maxsize=CACHE_SIZE)(validate)

    def validate_small_from_cache(
        schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
    ) -> list[GraphQLError]:
        small = document.loc is not None and _cacheable(document.loc.source.body)
        return (cached if small else validate)(schema, document, rules)

    return validate_small_from_cache


class BoundedValidation(SchemaExtension):
    """Replaces Strawberry's validation step (and its ValidationCache) with `validate`."""

    def __init__(self, validate: Validate) -> None:
        self.validate = validate

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None
        context.pre_execution_errors = self.validate(
            graphql_core_schema(context.schema),
            context.graphql_document,
            tuple(context.validation_rules),
        )
        yield


def create_schema(
    *,
    production: bool = False,
    introspection: bool = True,
    limits: GraphQLLimits | None = None,
    observers: tuple[Extension, ...] = (),
) -> Schema:
    """Limits apply in every environment; production masks errors and hides suggestions.

    `observers` are extensions that watch operations (metrics), run after the others.
    """
    limits = limits or GraphQLLimits()
    # The limiters make new rule classes each time they are constructed, and
    # Strawberry constructs extensions per request; the validation cache keys
    # on the rule classes, so they are made once here or the cache never hits.
    rules = [
        NoUnstorableText,
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
        *(() if introspection else DisableIntrospection().validation_rules),
    ]
    validate = bounded_validation(limits)
    extensions: list[Extension] = [
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        SmallDocumentParserCache,
        lambda: AddValidationRules(rules),
        lambda: BoundedValidation(validate),
        lambda: RedactErrors(production=production),
        CheckVariables,
        OperationLog,
        *observers,
    ]
    return Schema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


def export_sdl() -> str:
    return create_schema().as_str() + "\n"
