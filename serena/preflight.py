"""Start-up checks: every setting that names a service is tried before anything starts.

A failure becomes one line naming the setting and what is wrong with it, so an operator
knows which variable to fix without reading a traceback.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

from core.settings import Settings


class PreflightError(Exception):
    """One line: `SERENA_X: what is wrong`."""


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


async def check_database(settings: Settings, *, need_postgis: bool = True) -> str:
    """Connect, and report PostgreSQL and PostGIS versions."""
    try:
        conn = await asyncpg.connect(settings.asyncpg_dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        db = urlsplit(settings.asyncpg_dsn).path.lstrip("/")
        raise PreflightError(f"SERENA_DATABASE_URL: database {db!r} does not exist at {_redact(settings.database_url)} "
                             "(`serena services up` creates it)") from None
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        raise PreflightError(f"SERENA_DATABASE_URL: cannot connect to {_redact(settings.database_url)}: "
                             f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    try:
        version = await conn.fetchval("SHOW server_version")
        if need_postgis:
            available = await conn.fetchval("SELECT default_version FROM pg_available_extensions WHERE name='postgis'")
            if available is None:
                raise PreflightError("SERENA_DATABASE_URL: the server has no PostGIS extension "
                                     "(install postgresql-15-postgis-3, or run `serena services up`)")
    finally:
        await conn.close()
    return version


async def check_redis(settings: Settings) -> str:
    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        info = await client.info("server")
    except Exception as exc:  # redis-py raises several connection error types
        raise PreflightError(f"SERENA_REDIS_URL: cannot reach {_redact(settings.redis_url)}: {type(exc).__name__}: {exc}") from None
    finally:
        await client.aclose()
    return info.get("redis_version", "?")


def check_mqtt(settings: Settings) -> str:
    """A TCP connect to the broker (credentials are checked by the processes that use them)."""
    url = urlsplit(settings.mqtt_url)
    try:
        with socket.create_connection((url.hostname, url.port or 1883), timeout=3):
            pass
    except OSError as exc:
        raise PreflightError(f"SERENA_MQTT_URL: cannot reach the broker at {url.hostname}:{url.port or 1883}: {exc.strerror or exc} "
                             "(`serena services up` starts the project's Mosquitto)") from None
    return f"{url.hostname}:{url.port or 1883}"


async def run_all(settings: Settings, *, mqtt: bool = True) -> dict[str, str]:
    """All checks; raises PreflightError on the first failure."""
    out = {"postgres": await check_database(settings), "redis": await check_redis(settings)}
    if mqtt:
        out["mqtt"] = check_mqtt(settings)
    return out
