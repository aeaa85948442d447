"""Every route in the OpenAPI schema, called by every role, answers as the permission table says."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI

from core.rbac import Permission, Role, allows
from serena.app import create_app
from serena.deps import declared_permissions, iter_routes

ANON = None


def routes_without_permission(app: FastAPI) -> list[str]:
    """Operations of the OpenAPI schema whose route declares no permission (or more than one)."""
    declared = {}
    for path, methods, dependant in iter_routes(app):
        for m in methods:
            declared[(m.upper(), path)] = declared_permissions(dependant)
    bad = []
    for path, ops in app.openapi()["paths"].items():
        for method in ops:
            perms = declared.get((method.upper(), path), set())
            if len(perms) != 1:
                bad.append(f"{method.upper()} {path}: {sorted(p.value for p in perms) or 'no permission declared'}")
    return bad


def test_every_route_of_the_app_declares_exactly_one_permission(settings):
    assert routes_without_permission(create_app(settings)) == []


def test_a_route_without_declared_permission_is_caught(settings):
    app = create_app(settings)

    @app.get("/v1/forgotten")
    async def forgotten():
        return {}

    app.openapi_schema = None
    assert routes_without_permission(app) == ["GET /v1/forgotten: no permission declared"]


def _fill(path: str) -> str:
    path = path.replace("{user_id}", "00000000-0000-4000-8000-000000000000")
    path = path.replace("{role}", "customer")
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_route_answers_every_role_as_the_permission_table_says(app, client, make_account):
    schema = app.openapi()
    accounts = {role: await make_account(role) for role in Role}
    accounts[ANON] = None
    checked = 0
    mismatches = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            needed = Permission(op["x-serena-permission"])
            for role, account in accounts.items():
                headers = account.headers if account else {}
                kwargs = {"json": {}} if method in ("post", "put", "patch") else {}
                resp = await client.request(method.upper(), _fill(path), headers=headers, **kwargs)
                if needed is Permission.PUBLIC:
                    expected_denied = None
                elif role is ANON:
                    expected_denied = 401
                elif allows({role}, needed):
                    expected_denied = None
                else:
                    expected_denied = 403
                # The permission check's own refusals are recognisable by their reason; a 403 for a
                # domain reason (e.g. "not on your task list" with a made-up id) means access was granted.
                body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
                detail = body.get("detail", "") if isinstance(body, dict) else ""
                rbac_denied = (resp.status_code == 401 and not path.startswith("/v1/auth/")) or (
                    resp.status_code == 403 and str(detail).startswith("permission "))
                if expected_denied is None and rbac_denied:
                    mismatches.append(f"{method.upper()} {path} as {role}: got {resp.status_code} {detail}, expected access")
                elif expected_denied is not None and (resp.status_code != expected_denied or
                                                      (expected_denied == 403 and not rbac_denied)):
                    mismatches.append(f"{method.upper()} {path} as {role}: got {resp.status_code}, expected {expected_denied}")
                checked += 1
    assert mismatches == []
    assert checked >= len(Role) * 20


async def test_staff_role_without_second_factor_gets_no_staff_permission(client, make_account):
    admin_without_mfa = await make_account(Role.ADMIN, mfa=False)
    resp = await client.get("/v1/admin/users", headers=admin_without_mfa.headers)
    assert resp.status_code == 403
    assert "TOTP" in resp.json()["detail"]
    admin = await make_account(Role.ADMIN)
    assert (await client.get("/v1/admin/users", headers=admin.headers)).status_code == 200


@pytest.mark.parametrize("header", ["Bearer not-a-jwt", "Bearer ", "Basic abc"])
async def test_bad_authorization_headers_are_refused_with_a_reason(client, header):
    resp = await client.get("/v1/me", headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.json()["detail"]
