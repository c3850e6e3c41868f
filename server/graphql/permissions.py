"""Who may call what. Raises UNAUTHENTICATED or FORBIDDEN top-level errors."""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.permission import BasePermission

from server.auth import Principal
from server.domain.enums import Role
from server.graphql.errors import forbidden, unauthenticated
from server.graphql.types import Info


def require_principal(info: Info) -> Principal:
    principal = info.context.principal
    if principal is None:
        raise unauthenticated()
    return principal


class _RolePermission(BasePermission):
    roles: ClassVar[frozenset[Role]]

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = require_principal(info)
        if principal.role not in self.roles:
            raise forbidden()
        return True


class IsAuthenticated(_RolePermission):
    roles = frozenset(Role)


class IsAdmin(_RolePermission):
    roles = frozenset({Role.ADMIN})


class IsService(_RolePermission):
    roles = frozenset({Role.SERVICE})


class IsUser(_RolePermission):
    roles = frozenset({Role.USER})


class IsServiceOrAdmin(_RolePermission):
    roles = frozenset({Role.SERVICE, Role.ADMIN})


class IsUserOnSelfOrAdmin(BasePermission):
    """A USER acting on their own data (no `input.userId`, or their own), or an ADMIN."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = require_principal(info)
        if principal.role is Role.ADMIN:
            return True
        target = getattr(kwargs.get("input"), "user_id", None)
        if principal.role is Role.USER and (not target or target == principal.id):
            return True
        raise forbidden()
