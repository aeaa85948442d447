"""Roles and permissions: the one permission table of the platform, in code.

Every HTTP route and MQTT topic declares the permission it needs; a role grants a set of
permissions. The database mirrors this table (roles, permissions, role_permissions) so
reports and admin screens can join on it, but this module is the source of truth: migrations
seed and update the rows from here.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CUSTOMER = "customer"  # buys, tracks own orders
    DRIVER = "driver"  # streams GPS, scans packages, sees own tasks
    DISPATCHER = "dispatcher"  # watches the fleet, reassigns jobs
    SUPPORT = "support"  # reads orders and deliveries, helps customers
    MARKETING = "marketing"  # runs promotions and reports
    ADMIN = "admin"  # everything, including users and roles


# Staff roles must have a confirmed TOTP second factor before their tokens carry permissions.
STAFF_ROLES = frozenset({Role.DISPATCHER, Role.SUPPORT, Role.MARKETING, Role.ADMIN})


class Permission(StrEnum):
    PUBLIC = "public"  # no authentication at all (health, login, catalog browsing)
    AUTHENTICATED = "authenticated"  # any signed-in user, acting on their own account
    ORDERS_OWN = "orders:own"  # place and read one's own orders
    TRACKING_OWN = "tracking:own"  # watch one's own deliveries
    DRIVER_SELF = "driver:self"  # publish own location, read own tasks, scan
    FLEET_READ = "fleet:read"  # fleet board, driver positions
    FLEET_WRITE = "fleet:write"  # reassign jobs, manage drivers, vehicles, depots, zones
    DELIVERIES_WRITE = "deliveries:write"  # create and cancel delivery jobs through the public delivery API
    ORDERS_READ = "orders:read"  # read any customer's orders
    ORDERS_WRITE = "orders:write"  # refunds, cancellations on behalf of customers
    PROMOTIONS_WRITE = "promotions:write"  # coupons, campaigns
    REPORTS_READ = "reports:read"  # sales and delivery reports
    USERS_READ = "users:read"  # list users and their roles
    USERS_WRITE = "users:write"  # create users, grant and revoke roles
    AUDIT_READ = "audit:read"  # read and verify the audit log


SELF_SCOPED = (Permission.DRIVER_SELF, Permission.ORDERS_OWN, Permission.TRACKING_OWN)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.CUSTOMER: frozenset({Permission.ORDERS_OWN, Permission.TRACKING_OWN}),
    Role.DRIVER: frozenset({Permission.DRIVER_SELF}),
    Role.DISPATCHER: frozenset({Permission.FLEET_READ, Permission.FLEET_WRITE, Permission.ORDERS_READ, Permission.DELIVERIES_WRITE}),
    Role.SUPPORT: frozenset({Permission.ORDERS_READ, Permission.ORDERS_WRITE, Permission.FLEET_READ, Permission.USERS_READ}),
    Role.MARKETING: frozenset({Permission.PROMOTIONS_WRITE, Permission.REPORTS_READ}),
    # Admin gets every permission except the self-scoped ones: an admin is not a driver or a
    # customer, and "own orders" of an account with no orders would only blur the table.
    Role.ADMIN: frozenset(p for p in Permission if p not in (Permission.PUBLIC, Permission.AUTHENTICATED, *SELF_SCOPED)),
}


def permissions_for(roles: set[Role] | frozenset[Role]) -> frozenset[Permission]:
    """Union of the permissions the given roles grant (PUBLIC/AUTHENTICATED are implicit)."""
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS[role]
    return frozenset(granted)


def allows(roles: set[Role] | frozenset[Role], needed: Permission) -> bool:
    """Whether a signed-in user with `roles` may use something that needs `needed`."""
    if needed in (Permission.PUBLIC, Permission.AUTHENTICATED):
        return True
    return needed in permissions_for(roles)


def sync_statements() -> list[tuple[str, dict]]:
    """SQL that makes the roles / permissions / role_permissions tables mirror this module.

    Run after every migration (migrations/env.py), so adding a permission in code needs no
    hand-written migration.
    """
    stmts: list[tuple[str, dict]] = []
    for role in Role:
        stmts.append(("INSERT INTO roles (name, is_staff) VALUES (:n, :s) ON CONFLICT (name) DO UPDATE SET is_staff = EXCLUDED.is_staff",
                      {"n": role.value, "s": role in STAFF_ROLES}))
    for perm in Permission:
        stmts.append(("INSERT INTO permissions (name) VALUES (:n) ON CONFLICT DO NOTHING", {"n": perm.value}))
    pairs = sorted((r.value, p.value) for r, ps in ROLE_PERMISSIONS.items() for p in ps)
    stmts.append(("DELETE FROM role_permissions", {}))
    for r, p in pairs:
        stmts.append(("INSERT INTO role_permissions (role, permission) VALUES (:r, :p)", {"r": r, "p": p}))
    stmts.append(("DELETE FROM permissions WHERE name <> ALL(:names)", {"names": [p.value for p in Permission]}))
    return stmts
