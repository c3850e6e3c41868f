"""What every capability's GraphQL module shares: enums, Info, OperationError, pages, results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Self, TypeVar

import strawberry
from graphql import GraphQLSchema

from server.domain.enums import (
    AppType,
    AuditAction,
    ErrorCode,
    RevocationReason,
    Role,
    TokenState,
)
from server.domain.errors import Refusal
from server.domain.pagination import Page
from server.graphql.context import Context


def graphql_core_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema Strawberry built from ours (it keeps it as `_schema`)."""
    return schema._schema


strawberry.enum(AppType, name="GithubAppType")
strawberry.enum(Role, name="Role")
strawberry.enum(
    TokenState,
    name="TokenState",
    description=(
        "Derived from the stored row and the current time; never stored.\n"
        "NOT_CONNECTED: no row. REVOKED: revokedAt is set.\n"
        "ACTIVE: access token not expired (or has no expiry).\n"
        "EXPIRED: access token expired, refresh token still valid (refreshable).\n"
        "REFRESH_EXPIRED: access token expired and no usable refresh token: the user\n"
        "must connect again."
    ),
)
strawberry.enum(RevocationReason, name="RevocationReason")
strawberry.enum(ErrorCode, name="ErrorCode")
strawberry.enum(AuditAction, name="AuditAction")

Info = strawberry.Info[Context, None]

DomainT = TypeVar("DomainT")
SuccessT = TypeVar("SuccessT")
NodeT = TypeVar("NodeT")
EdgeT = TypeVar("EdgeT")


@strawberry.type(
    description=(
        "An expected failure, returned as data. `message` is for people, `code` for programs."
    )
)
class OperationError:
    code: ErrorCode
    message: str
    field: str | None = None


def to_result(
    outcome: DomainT | Refusal, success: Callable[[DomainT], SuccessT]
) -> SuccessT | OperationError:
    """A mutation's result union member for what the domain returned."""
    if isinstance(outcome, Refusal):
        return OperationError(code=outcome.code, message=outcome.message, field=outcome.field)
    return success(outcome)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


@strawberry.type
class Connection(Generic[EdgeT]):
    """A page of a list; each named connection subclasses it with its named edge."""

    edges: list[EdgeT]
    page_info: PageInfo

    @classmethod
    def from_page(
        cls,
        page: Page[DomainT],
        edge: Callable[..., EdgeT],
        node: Callable[[DomainT], object],
    ) -> Self:
        return cls(
            edges=[edge(cursor=cursor, node=node(item)) for cursor, item in page.items],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )
