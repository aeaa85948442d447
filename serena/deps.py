"""FastAPI dependencies that read like types: the database session, the caller, the permission a route needs.

Every route declares exactly one permission with `require(Permission.X)` (PUBLIC included,
so "no check" is a visible decision, not an omission). The RBAC test walks the OpenAPI
routes, finds each route's declared permission through the `serena_permission` marker,
and fails any route that has none.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from core import auth
from core.errors import AuthError, Forbidden
from core.models import User
from core.rbac import STAFF_ROLES, Permission, Role, allows
from core.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="Access token from /v1/auth/login")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back on error.

    Used with `scope="function"` (`Db` below): FastAPI then runs the exit (the COMMIT) when the
    handler returns and BEFORE the response is sent. With the default request scope the commit
    ran after the response, so a client could get 201 for a row another request could not see
    yet (or that a failed commit never stored).
    """
    async with request.app.state.sessions() as session, session.begin():
        yield session


def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
Db = Annotated[AsyncSession, Depends(get_db, scope="function")]
Redis = Annotated[aioredis.Redis, Depends(get_redis)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: anonymous (user_id None) or a signed-in user with the roles in effect."""

    user_id: uuid.UUID | None
    roles: frozenset[Role]
    mfa: bool

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Principal(None, frozenset(), False)


def _principal(settings: Settings, creds: HTTPAuthorizationCredentials | None) -> Principal:
    if creds is None:
        return ANONYMOUS
    claims = auth.decode_access_token(creds.credentials, secret=settings.jwt_secret)
    roles = claims.roles
    if not claims.mfa:
        # Staff roles grant nothing until the second factor was given at sign-in.
        roles = roles - STAFF_ROLES
    return Principal(claims.user_id, roles, claims.mfa)


def require(permission: Permission):
    """Dependency for a route that needs `permission`; yields the Principal."""

    async def dependency(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        settings: Settings = request.app.state.settings
        if permission is Permission.PUBLIC:
            try:
                return _principal(settings, creds)
            except AuthError:
                return ANONYMOUS  # a stale token must not lock anyone out of public pages
        if creds is None:
            raise AuthError("sign-in required: send 'Authorization: Bearer <access token>'")
        principal = _principal(settings, creds)
        if not allows(principal.roles, permission):
            raise Forbidden(f"permission {permission.value!r} required"
                            + ("; staff roles need a TOTP second factor at sign-in" if not principal.mfa else ""))
        request.state.principal = principal
        return principal

    dependency.serena_permission = permission  # type: ignore[attr-defined]
    dependency.__name__ = f"require_{permission.name.lower()}"
    return Depends(dependency)


async def load_user(db: AsyncSession, principal: Principal) -> User:
    """The caller's user row; refuses disabled accounts even while their access token is valid."""
    if principal.user_id is None:
        raise AuthError("sign-in required")
    user = await db.get(User, principal.user_id)
    if user is None or not user.is_active:
        raise AuthError("account disabled or removed")
    return user


def declared_permissions(dependant) -> set[Permission]:
    """Permissions declared with `require()` anywhere in a route's dependency tree."""
    found: set[Permission] = set()
    stack = [dependant]
    while stack:
        dep = stack.pop()
        perm = getattr(dep.call, "serena_permission", None)
        if perm is not None:
            found.add(perm)
        stack.extend(dep.dependencies)
    return found


def iter_routes(app):
    """(path, methods, dependant) for every HTTP and WebSocket route, through included routers."""
    for item in app.routes:
        contexts = getattr(item, "effective_route_contexts", None)
        if contexts is not None:
            for ctx in contexts():
                yield ctx.path, set(getattr(ctx, "methods", None) or {"WEBSOCKET"}), ctx.dependant
        elif hasattr(item, "dependant"):
            yield item.path, set(getattr(item, "methods", None) or {"WEBSOCKET"}), item.dependant
