"""The FastAPI application: lifespan (database, Redis), error mapping, health, metrics, routers.

`create_app(settings)` builds an app for given settings, so tests run one against their
own database; `serena up` runs `serena.app:app` under uvicorn with settings from the
environment.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from core import db as dbmod
from core.errors import SerenaError, Throttled
from core.settings import Settings, get_settings

logger = logging.getLogger("serena.api")

REQUESTS = Counter("serena_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("serena_http_request_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))


class _Metrics:
    """Request count and latency per route template, as plain ASGI middleware.

    It was `@app.middleware("http")` (Starlette's BaseHTTPMiddleware); profiled under load that
    wrapper — a task group, memory streams and a streaming re-wrap of every response — took
    about a quarter of the API's event-loop time, more than the SQL of the requests it timed.
    Latency is now measured to the end of the response body (it was to its headers).
    """

    def __init__(self, app) -> None:  # noqa: ANN001 - an ASGI app
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception before the response started

        async def send_status(message) -> None:  # noqa: ANN001
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(scope["method"], path).observe(time.perf_counter() - start)
            REQUESTS.labels(scope["method"], path, str(status)).inc()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = dbmod.make_engine(settings.database_url, pool_size=10, max_overflow=10)
        app.state.engine = engine
        app.state.sessions = dbmod.make_sessionmaker(engine)
        app.state.pg_pool = await dbmod.make_pool(settings.asyncpg_dsn, min_size=1, max_size=5)
        app.state.redis = aioredis.from_url(settings.redis_url)
        try:
            yield
        finally:
            await app.state.redis.aclose()
            # close() waits for every connection to be released; a request or WebSocket that
            # is still holding one must not hang shutdown forever.
            try:
                await asyncio.wait_for(app.state.pg_pool.close(), timeout=10)
            except TimeoutError:
                logger.warning("database pool did not close within 10 s; terminating its connections")
                app.state.pg_pool.terminate()
            await engine.dispose()

    app = FastAPI(title="Serena", version="0.1.0", lifespan=lifespan,
                  description="Real-time last-mile delivery platform with a compact commerce shell.")
    app.state.settings = settings

    @app.exception_handler(SerenaError)
    async def _serena_error(request: Request, exc: SerenaError):
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Throttled) else None
        if exc.status_code == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        # One readable reason per problem: where it is and what is wrong with it.
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append({"field": loc, "reason": err.get("msg", "invalid"), "type": err.get("type")})
        first = problems[0] if problems else {"field": "body", "reason": "invalid"}
        return JSONResponse({"error": "invalid", "detail": f"{first['field']}: {first['reason']}", "problems": problems},
                            status_code=422)

    app.add_middleware(_Metrics)

    from serena.routers import admin, auth, health

    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(admin.router)
    app.include_router(importlib.import_module("tracking.api").router)
    app.router.routes.extend(importlib.import_module("tracking.api").ws_router.routes)  # WS routes mounted directly: serena.deps.iter_routes sees no dependant for WS routes of included routers (FastAPI 0.165)
    app.include_router(importlib.import_module("serena.web.track").router)
    app.include_router(importlib.import_module("commerce.api").router)
    app.include_router(importlib.import_module("commerce.web.pages").router)
    from dispatch import api as dispatch_api

    app.include_router(dispatch_api.router)
    app.router.routes.extend(importlib.import_module("dispatch.ws").router.routes)  # see dispatch/ws.py: not include_router
    app.include_router(importlib.import_module("notifications.api").router)
    try:
        pages = importlib.import_module("serena.web.pages")
    except ModuleNotFoundError as exc:
        if exc.name not in ("serena.web", "serena.web.pages"):
            raise
    else:
        pages.mount(app)
    _annotate_openapi(app)
    return app


def _annotate_openapi(app: FastAPI) -> None:
    """Publish each operation's required permission as `x-serena-permission` in the OpenAPI schema."""
    from serena.deps import declared_permissions, iter_routes

    build = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for path, methods, dependant in iter_routes(app):
            perms = sorted(p.value for p in declared_permissions(dependant))
            for method in methods:
                op = schema.get("paths", {}).get(path, {}).get(method.lower())
                if op is not None:
                    op["x-serena-permission"] = perms[0] if len(perms) == 1 else perms
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def metrics_response() -> Response:
    """Prometheus text; with several API processes (PROMETHEUS_MULTIPROC_DIR, set by `serena up`) the sum over all of them."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
