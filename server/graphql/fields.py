"""Strawberry's field decorators with the keywords ghvault uses, typed.

Called with keywords only, `strawberry.field(...)`, `strawberry.mutation(...)`
and `strawberry.subscription(...)` are typed as returning `Any`, which would
leave every resolver they decorate untyped. At run time each returns a
decorator that turns the resolver into a StrawberryField, which is what
these say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from strawberry.permission import BasePermission
from strawberry.types.field import StrawberryField

Resolver = Callable[..., Any]
Decorator = Callable[[Resolver], StrawberryField]
Permissions = list[type[BasePermission]] | None


def field(*, description: str, permission_classes: Permissions = None) -> Decorator:
    decorate: Decorator = strawberry.field(
        description=description, permission_classes=permission_classes
    )
    return decorate


def mutation(*, description: str, permission_classes: Permissions = None) -> Decorator:
    decorate: Decorator = strawberry.mutation(
        description=description, permission_classes=permission_classes
    )
    return decorate


def subscription(*, description: str, permission_classes: Permissions = None) -> Decorator:
    decorate: Decorator = strawberry.subscription(
        description=description, permission_classes=permission_classes
    )
    return decorate
