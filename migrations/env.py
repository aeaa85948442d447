"""Alembic environment: runs migrations over the async engine, URL from settings or the caller."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import importlib

import core.models  # noqa: F401 - registers the kernel's tables on Base.metadata
from core.db import Base, make_engine
from core.settings import get_settings

# Each domain's tables, so autogenerate sees them (a domain not written yet is skipped).
for _module in ("dispatch.models", "tracking.models", "commerce.models", "notifications.models"):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise

config = context.config
target_metadata = Base.metadata


def _include_object(obj, name, type_, reflected, compare_to):
    # PostGIS and its tiger/topology schemas own tables we must never touch.
    if type_ == "table" and name in {"spatial_ref_sys"}:
        return False
    return True


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, include_object=_include_object)
    with context.begin_transaction():
        context.run_migrations()
        _sync_rbac(connection)


def _sync_rbac(connection: Connection) -> None:
    """Mirror core.rbac's permission table into the database after every upgrade."""
    from sqlalchemy import inspect, text

    from core import rbac

    if not inspect(connection).has_table("role_permissions"):
        return  # downgraded below the foundation
    for sql, params in rbac.sync_statements():
        connection.execute(text(sql), params)


async def _run_async() -> None:
    url = config.attributes.get("url") or get_settings().database_url
    engine = make_engine(url, poolclass=None)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run against a database")
asyncio.run(_run_async())
