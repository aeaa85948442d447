"""The test harness itself runs on real PostGIS and Redis."""

from __future__ import annotations


async def test_worker_database_has_postgis_and_migrated_tables(pool):
    version = await pool.fetchval("SELECT postgis_lib_version()")
    assert version.startswith("3.")
    tables = {r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"users", "roles", "outbox", "processed_events", "audit_log", "drivers", "service_zones"} <= tables


async def test_redis_is_real(redis, settings):
    key = settings.redis_prefix + "ping"
    await redis.set(key, "1")
    assert await redis.get(key) == b"1"
