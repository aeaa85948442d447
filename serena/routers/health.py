"""Liveness and dependency health, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from core.rbac import Permission
from serena.deps import require

router = APIRouter(tags=["health"])


async def _check_postgres(request: Request) -> dict:
    async with request.app.state.pg_pool.acquire() as conn:
        pg = await conn.fetchval("SHOW server_version")
        postgis = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
    if postgis is None:
        return {"ok": False, "version": pg, "error": "PostGIS extension not installed in this database"}
    return {"ok": True, "version": pg, "postgis": postgis}


async def _check_redis(request: Request) -> dict:
    info = await request.app.state.redis.info("server")
    return {"ok": True, "version": info.get("redis_version")}


async def _check_mqtt(request: Request) -> dict:
    import aiomqtt
    from urllib.parse import urlsplit

    settings = request.app.state.settings
    url = urlsplit(settings.mqtt_url)
    async with aiomqtt.Client(url.hostname, url.port or 1883, username=settings.mqtt_service_username,
                              password=settings.mqtt_service_password, timeout=2) as client:
        await client.publish(f"{settings.mqtt_topic_root}/health", b"ping", qos=0)
    return {"ok": True, "url": f"mqtt://{url.hostname}:{url.port or 1883}"}


async def _timed(name: str, check, request: Request) -> tuple[str, dict]:
    start = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(request), timeout=3)
    except Exception as exc:  # any failure is a finding to report, not a crash of /health
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return name, result


@router.get("/health")
async def health(request: Request, _=require(Permission.PUBLIC)):
    """Each dependency's state; 503 when any is down."""
    checks = dict(await asyncio.gather(
        _timed("postgres", _check_postgres, request),
        _timed("redis", _check_redis, request),
        _timed("mqtt", _check_mqtt, request),
    ))
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(_=require(Permission.PUBLIC)):
    """Prometheus metrics of this process."""
    from serena.app import metrics_response

    return metrics_response()
