"""The Strawberry schema, with ghvault's error handling, limits and caches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import strawberry
from graphql import DocumentNode, GraphQLError, GraphQLSchema, specified_rules
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
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
from server.graphql.documents import DocumentCache, Rules, Validate
from server.graphql.errors import RedactErrors, log_errors
from server.graphql.observers import ObserveOperations, OperationObserver
from server.graphql.operation_log import OperationLog
from server.graphql.rules import NoUnstorableText
from server.graphql.subscriptions import Subscription
from server.graphql.types import graphql_core_schema
from server.graphql.variables import CheckVariables

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
    """Strawberry's schema, and what ghvault decided about it once (create_schema sets these).

    Strawberry's path and the lean path (server.graphql.lean) both read them.
    """

    production: bool
    documents: DocumentCache
    # Strawberry's own rules, then ghvault's: what every document is validated with.
    validation_rules: Rules
    validate: Validate
    observers: tuple[OperationObserver, ...]

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Replaces Strawberry's default, which logs raw messages and tracebacks.
        context: Any = execution_context.context if execution_context else None
        log_errors(errors, request_id=getattr(context, "request_id", "-"))


Extension = Callable[[], SchemaExtension] | type[SchemaExtension]


def bounded_validation(limits: GraphQLLimits) -> Validate:
    """graphql-core's validation behind the document budget."""
    budget = DocumentBudget(limits)

    def validate(schema: GraphQLSchema, document: DocumentNode, rules: Rules) -> list[GraphQLError]:
        refusal = budget.check(document)
        return [refusal] if refusal else validate_document(schema, document, rules)

    return validate


class CachedParsing(SchemaExtension):
    """Replaces Strawberry's parsing step (and its ParserCache) with the schema's cache."""

    def __init__(self, documents: DocumentCache) -> None:
        self.documents = documents

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.graphql_document = self.documents.parse(context.query or "")
        yield


class CachedValidation(SchemaExtension):
    """Replaces Strawberry's validation step (and its ValidationCache) with `validate`,
    once per document the schema's cache keeps."""

    def __init__(self, documents: DocumentCache, rules: Rules, validate: Validate) -> None:
        self.documents = documents
        self.rules = rules
        self.validate = validate

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None
        context.pre_execution_errors = self.documents.validate(
            graphql_core_schema(context.schema), context.graphql_document, self.rules, self.validate
        )
        yield


def create_schema(
    *,
    production: bool = False,
    introspection: bool = True,
    limits: GraphQLLimits | None = None,
    observers: tuple[OperationObserver, ...] = (),
) -> Schema:
    """Limits apply in every environment; production masks errors and hides suggestions.

    `observers` are told of every operation (metrics), after the access log is.
    """
    limits = limits or GraphQLLimits()
    # The limiters make new rule classes each time they are constructed; they
    # are made once here, so that a document validates once per schema.
    rules: Rules = (
        *specified_rules,
        NoUnstorableText,
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
        *(() if introspection else DisableIntrospection().validation_rules),
    )
    documents = DocumentCache(max_tokens=limits.max_tokens)
    validate = bounded_validation(limits)
    watchers = (OperationLog(), *observers)
    extensions: list[Extension] = [
        lambda: CachedParsing(documents),
        lambda: CachedValidation(documents, rules, validate),
        lambda: RedactErrors(production=production),
        CheckVariables,
        lambda: ObserveOperations(watchers),
    ]
    schema = Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )
    schema.production = production
    schema.documents = documents
    schema.validation_rules = rules
    schema.validate = validate
    schema.observers = watchers
    return schema


def export_sdl() -> str:
    return create_schema().as_str() + "\n"
