"""@authenticated, @hasRole and @threadRole: permission checks that print as directives.

Each permission carries its schema directive, so that the printed schema reads
``@threadRole(role: ADMIN)`` as the contract does; the rules live in services/permissions.py.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location

from threadline.schema.context import Context
from threadline.schema.enums import SystemRole, ThreadRole
from threadline.services import permissions


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="authenticated",
    description="The caller must be signed in.",
)
class AuthenticatedDirective:
    pass


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="hasRole",
    description="The caller's system role must be at least `role` (OWNER > ADMIN > MEMBER).",
)
class HasRoleDirective:
    role: SystemRole


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="threadRole",
    description=(
        "The caller's role in the thread that the field's `threadId` argument names "
        "(or that the `messageId` / `attachmentId` argument's message belongs to) must "
        "be at least `role`. A system OWNER has OWNER rights in every thread and a "
        "system ADMIN has ADMIN rights in every thread."
    ),
)
class ThreadRoleDirective:
    role: ThreadRole


class _Directed(BasePermission):
    """A permission printed as the directive it carries (strawberry's public hook)."""

    directive: object

    @property
    def schema_directive(self) -> object:
        return self.directive


class IsAuthenticated(_Directed):
    directive = AuthenticatedDirective()

    async def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        context: Context = info.context
        await context.viewer()  # raises UNAUTHENTICATED
        return True


class HasSystemRole(_Directed):
    def __init__(self, role: SystemRole) -> None:
        self.role = role
        self.directive = HasRoleDirective(role=role)

    async def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        context: Context = info.context
        permissions.require_system_role(await context.viewer(), self.role)
        return True


def _thread_argument(kwargs: dict[str, Any]) -> tuple[str, Any]:
    for kind in ("thread", "message", "attachment"):
        for name in (f"{kind}Id", f"{kind}_id"):
            if name in kwargs:
                return kind, kwargs[name]
    data = kwargs.get("input")
    thread_id = getattr(data, "thread_id", None)
    if thread_id is not None:
        return "thread", thread_id
    raise RuntimeError("@threadRole on a field without a thread, message or attachment id")


class HasThreadRole(_Directed):
    def __init__(self, role: ThreadRole, *, checked_by_write: bool = False) -> None:
        self.role = role
        # The service checks this same role inside its write transaction (with
        # permissions.access_thread or the equivalent condition in one statement);
        # checking here too would only add a query.
        self.checked_by_write = checked_by_write
        self.directive = ThreadRoleDirective(role=role)

    async def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        context: Context = info.context
        viewer = await context.viewer()
        if self.checked_by_write:
            return True
        kind, value = _thread_argument(kwargs)
        async with context.checks() as session:  # the primary, even when content is not
            if kind == "thread":
                access = await permissions.access_thread(session, viewer, value, self.role)
            elif kind == "message":
                _, access = await permissions.access_message(session, viewer, value, self.role)
            else:
                access = await permissions.access_attachment(session, viewer, value, self.role)
        context.access[access.thread.id] = access
        return True


def authenticated() -> PermissionExtension:
    return PermissionExtension([IsAuthenticated()])


def has_role(role: SystemRole) -> PermissionExtension:
    return PermissionExtension([HasSystemRole(role)])


def thread_role(role: ThreadRole, *, checked_by_write: bool = False) -> PermissionExtension:
    return PermissionExtension([HasThreadRole(role, checked_by_write=checked_by_write)])
