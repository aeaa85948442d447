"""Tracking's HTTP and WebSocket routes: driver pings (WebSocket, offline batch), fleet positions, refusals, links, customer tracking.

Thin routers over `tracking.ingest.Pipeline` (the same validation and storage as MQTT),
`tracking.live`, `tracking.history`, `tracking.links`, `tracking.eta` and `tracking.fanout`.
Each route declares its one permission with `require()`; the customer's routes are PUBLIC
because the unguessable link token is the credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.responses import HTMLResponse

from core.errors import AuthError, Forbidden, NotFound, ValidationFailed
from core.rbac import Permission, allows
from serena.deps import ANONYMOUS, Principal, _principal, require
from tracking import eta, history, links, live
from tracking.fanout import SNAPSHOT, Fanout, Inbox
from tracking.ingest import Inbound, Pipeline, default_stages, reasons_of
from tracking.models import Source
from tracking.schemas import (
    BatchResponse,
    LinkCreate,
    LinkRead,
    PingIn,
    PlanWrite,
    PositionRead,
    RejectionCounts,
    TrackingView,
)

router = APIRouter(prefix="/v1/tracking", tags=["tracking"])
ws_router = APIRouter(tags=["tracking"])

MAX_BATCH = 10_000  # pings per HTTP batch (a day of 1 Hz pings is 86,400: the app sends chunks)
SNAPSHOT_EVERY_S = 30.0  # a watcher gets the current state at least this often


def ws_require(permission: Permission, *, first_message: bool = False):
    """`serena.deps.require` for WebSocket routes (FastAPI does not hand a WebSocket to a `Request` parameter).

    Same checks and the same `serena_permission` marker, so the RBAC walk sees the route's one
    permission. A refused socket is closed with 1008 (policy violation) before it is accepted.
    With `first_message=True` a socket without an Authorization header (a browser cannot set
    one) is let through as ANONYMOUS, and the route must call `authenticate_first_message`.
    """

    async def dependency(websocket: WebSocket) -> Principal:
        header = websocket.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        creds = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if scheme.lower() == "bearer" and token else None
        if creds is None and first_message and permission is not Permission.PUBLIC:
            return ANONYMOUS
        try:
            principal = _principal(websocket.app.state.settings, creds)
        except AuthError:
            principal = None
        if permission is Permission.PUBLIC:
            return principal or ANONYMOUS
        if principal is None or principal.anonymous or not allows(principal.roles, permission):
            await websocket.close(code=1008, reason=f"permission {permission.value!r} required")
            raise WebSocketDisconnect(code=1008)
        return principal

    dependency.serena_permission = permission  # type: ignore[attr-defined]
    dependency.__name__ = f"ws_require_{permission.name.lower()}"
    return Depends(dependency)


FIRST_MESSAGE_TIMEOUT_S = 10.0


async def authenticate_first_message(websocket: WebSocket, permission: Permission) -> Principal | None:
    """After accept: read `{"type": "auth", "access_token": "..."}` and check it; close 4401/4403 and return None if bad."""
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), timeout=FIRST_MESSAGE_TIMEOUT_S)
        msg = orjson.loads(raw)
    except (TimeoutError, WebSocketDisconnect, orjson.JSONDecodeError, KeyError, RuntimeError):
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != "auth" or not isinstance(msg.get("access_token"), str):
        await websocket.close(code=4401, reason='sign-in required: send {"type": "auth", "access_token": "..."} first')
        return None
    try:
        principal = _principal(websocket.app.state.settings,
                               HTTPAuthorizationCredentials(scheme="Bearer", credentials=msg["access_token"]))
    except AuthError as exc:
        await websocket.close(code=4401, reason=str(exc)[:120])
        return None
    if principal.anonymous or not allows(principal.roles, permission):
        await websocket.close(code=4403, reason=f"permission {permission.value!r} required")
        return None
    return principal


def _state(app) -> tuple[Pipeline, Fanout]:
    st = app.state
    if getattr(st, "tracking_pipeline", None) is None:
        stages = default_stages(settings=st.settings, pool=st.pg_pool, redis=st.redis)
        stage = next(x for x in stages if isinstance(x, eta.EtaStage))
        st.tracking_pipeline = Pipeline(settings=st.settings, pool=st.pg_pool, redis=st.redis, stages=stages,
                                        push=eta.make_push(st.settings, stage))
        st.tracking_fanout = Fanout(st.redis, st.settings.redis_prefix)
        # Bounds the connect-time lookups of a burst of watchers (10,000 phones reconnecting after
        # a deploy) below the Redis and database pools, which refuse rather than queue when full.
        st.tracking_connect_sem = asyncio.Semaphore(32)
    return st.tracking_pipeline, st.tracking_fanout


async def _driver_id(app, principal: Principal) -> int:
    cache = app.state.__dict__.setdefault("tracking_driver_ids", {})
    if principal.user_id in cache:
        return cache[principal.user_id]
    did = await app.state.pg_pool.fetchval("SELECT id FROM drivers WHERE user_id = $1 AND active", principal.user_id)
    if did is None:
        raise Forbidden("this account has no active driver profile")
    cache[principal.user_id] = did
    return did


def _results(result, pings: list[Any]) -> BatchResponse:
    status: dict[int, tuple[str, str | None]] = {}
    for f in result.accepted:
        status[f.seq] = ("accepted", None)
    for r in result.rejected:
        if r.seq is not None and r.seq not in status:
            status[r.seq] = ("duplicate", "duplicate") if r.reason == "duplicate" else ("rejected", str(r.reason))
    rows = []
    for p in pings:
        seq = p.get("seq") if isinstance(p, dict) else None
        st, reason = status.get(seq, ("rejected", "schema")) if isinstance(seq, int) else ("rejected", "schema")
        rows.append({"seq": seq if isinstance(seq, int) else None, "status": st, "reason": reason})
    return BatchResponse(accepted=len(result.accepted), rejected=reasons_of(result), results=rows)


# --- driver -----------------------------------------------------------------------------------


@router.post("/me/pings", response_model=BatchResponse,
             summary="Upload a batch of pings (the driver app's offline buffer after reconnect)")
async def upload_batch(request: Request, principal: Annotated[Principal, require(Permission.DRIVER_SELF)],
                       pings: Annotated[list[Any], Body(description="Ping objects (see PingIn)", max_length=MAX_BATCH)]):
    """Validated and stored like MQTT pings; the app may drop from its buffer every ping reported accepted or duplicate."""
    pipeline, _ = _state(request.app)
    d = await _driver_id(request.app, principal)
    now = time.time()
    result = await pipeline.process([Inbound(d, p, Source.HTTP_BATCH, now) for p in pings])
    return _results(result, pings)


@router.get("/me/rejections", response_model=RejectionCounts, summary="My refused pings by reason (last 24 h)")
async def my_rejections(request: Request, principal: Annotated[Principal, require(Permission.DRIVER_SELF)]):
    d = await _driver_id(request.app, principal)
    return RejectionCounts(driver_id=d, counts=await history.rejection_counts(request.app.state.pg_pool, driver_id=d))


@ws_router.websocket("/ws/driver")
async def driver_socket(websocket: WebSocket,
                        principal: Annotated[Principal, ws_require(Permission.DRIVER_SELF, first_message=True)]):
    """Same messages as MQTT (a ping or a list of pings per frame); each frame is answered after it is stored.

    Auth: an `Authorization: Bearer` header (apps), or — browsers cannot set headers on a
    WebSocket — a first message `{"type": "auth", "access_token": "..."}`, answered `{"type": "ready"}`.
    Reply: {"accepted": [seq...], "duplicates": [seq...], "rejected": [{"seq", "reason"}...]}. A ping in
    `accepted` or `duplicates` is durably stored and may be dropped from the app's buffer.
    """
    app = websocket.app
    pipeline, _ = _state(app)
    if principal.anonymous:
        await websocket.accept()
        principal = await authenticate_first_message(websocket, Permission.DRIVER_SELF)
        if principal is None:
            return
        accepted = True
    else:
        accepted = False
    try:
        d = await _driver_id(app, principal)
    except Forbidden:
        await websocket.close(code=1008 if not accepted else 4403, reason="no active driver profile")
        return
    if accepted:
        await websocket.send_text(orjson.dumps({"type": "ready", "driver_id": d}).decode())
    else:
        await websocket.accept()
    try:
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            data = frame.get("text") if frame.get("text") is not None else frame.get("bytes")
            result = await pipeline.process([Inbound(d, data, Source.WEBSOCKET, time.time())])
            await websocket.send_text(orjson.dumps({
                "accepted": [f.seq for f in result.accepted],
                "duplicates": [r.seq for r in result.rejected if r.reason == "duplicate"],
                "rejected": [{"seq": r.seq, "reason": str(r.reason)} for r in result.rejected if r.reason != "duplicate"],
            }).decode())
    except WebSocketDisconnect:
        return


# --- fleet ------------------------------------------------------------------------------------


@router.get("/positions", response_model=list[PositionRead], summary="Latest position of every driver (fleet board)")
async def positions(request: Request, _: Annotated[Principal, require(Permission.FLEET_READ)]):
    st = request.app.state
    return await live.latest_positions(redis=st.redis, prefix=st.settings.redis_prefix, pool=st.pg_pool)


@router.get("/drivers/{driver_id}/rejections", response_model=RejectionCounts, summary="A driver's refused pings by reason")
async def driver_rejections(request: Request, driver_id: int, _: Annotated[Principal, require(Permission.FLEET_READ)],
                            hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    counts = await history.rejection_counts(request.app.state.pg_pool, driver_id=driver_id, since=since)
    return RejectionCounts(driver_id=driver_id, counts=counts)


@router.get("/drivers/{driver_id}/track", summary="A driver's stored fixes in a time range")
async def driver_track(request: Request, driver_id: int, _: Annotated[Principal, require(Permission.FLEET_READ)],
                       start: dt.datetime, end: dt.datetime) -> list[dict]:
    if end <= start or end - start > dt.timedelta(days=2):
        raise ValidationFailed("end must be after start, at most 2 days later")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationFailed("start and end need a UTC offset")
    return await history.track(request.app.state.pg_pool, driver_id=driver_id, start=start, end=end)


@router.put("/drivers/{driver_id}/plan", status_code=204, summary="Replace a driver's remaining stops (dispatch's interface)")
async def put_plan(request: Request, driver_id: int, body: PlanWrite, _: Annotated[Principal, require(Permission.FLEET_WRITE)]):
    st = request.app.state
    await eta.write_plan(st.redis, prefix=st.settings.redis_prefix, driver_id=driver_id,
                         stops=[s.model_dump() for s in body.stops], version=body.version)


# --- customer ---------------------------------------------------------------------------------


@router.post("/links", response_model=LinkRead, status_code=201, summary="Issue a customer tracking link for an order")
async def create_link(request: Request, body: LinkCreate, _: Annotated[Principal, require(Permission.FLEET_WRITE)]):
    st = request.app.state
    token = await links.issue(st.pg_pool, order_id=body.order_id, ttl_s=st.settings.tracking_link_ttl_s)
    return LinkRead(token=token, path=f"/track/{token}", ws_path=f"/ws/track/{token}")


async def customer_snapshot(app, order_id: str, delivered: bool) -> dict:
    """The customer's current view from Redis (live position, plan, published ETA), computed on demand."""
    st = app.state
    prefix = st.settings.redis_prefix
    d = await eta.driver_of_order(st.redis, prefix=prefix, order_id=order_id)
    if d is None:
        return {"type": "update", "order_id": order_id, "status": "delivered" if delivered else "scheduled"}
    fix = (await live.LiveState(st.redis, prefix).get([d])).get(d)
    plan = await eta.read_plan(st.redis, prefix=prefix, driver_id=d)
    msg: dict[str, Any] = {"type": "update", "driver_id": d}
    if fix:
        msg.update(fix)
        msg.pop("sent_at", None)  # a snapshot is not a fresh delivery of that fix
    if plan and fix:
        etas = eta.compute(plan["stops"], lat=fix["lat"], lng=fix["lng"], now=max(fix["ts"], time.time() - 3600))
        shown = await st.redis.hget(eta.Keys(prefix).eta, order_id)
        shown = orjson.loads(shown) if shown else None
        msg["stops"] = [{"stop_id": e.stop_id, "order_id": e.order_id, "index": e.index, "status": e.status,
                         "eta_earliest": shown["earliest"] if shown and e.order_id == order_id else e.earliest,
                         "eta_latest": shown["latest"] if shown and e.order_id == order_id else e.latest} for e in etas]
    return customer_view(msg, order_id=order_id, exact_within=st.settings.tracking_exact_within_stops, delivered=delivered)


def customer_view(update: dict, *, order_id: str, exact_within: int, delivered: bool = False) -> dict:
    """What one customer may see of a driver update: their stop's ETA and status; the exact position only when close."""
    mine = next((s for s in update.get("stops", ()) if s.get("order_id") == order_id), None)
    if delivered:
        status = "delivered"
    elif mine is None:
        status = "scheduled" if "stops" not in update else "delivered"
    elif mine["status"] == "arrived":
        status = "arrived"
    elif mine["index"] == 0 and mine["eta_latest"] - update.get("ts", time.time()) <= eta.ARRIVING_S * 2:
        status = "arriving"
    else:
        status = "on_the_way"
    out: dict[str, Any] = {"type": "update", "order_id": order_id, "status": status}
    if mine is not None:
        out["eta"] = {"earliest": mine["eta_earliest"], "latest": mine["eta_latest"]}
        out["stops_before"] = mine["index"]
    if "lat" in update and status not in ("delivered",):
        exact = mine is not None and mine["index"] < exact_within
        if exact:
            lat, lng = update["lat"], update["lng"]
        else:
            # One H3 lookup per update, not per watcher: the fan-out hands the same dict to all of them.
            if "_coarse" not in update:
                update["_coarse"] = eta.coarse(update["lat"], update["lng"])
            lat, lng = update["_coarse"]
        out["position"] = {"lat": lat, "lng": lng, "exact": exact, "ts": update.get("ts"),
                           "heading_deg": update.get("heading_deg") if exact else None,
                           "speed_mps": update.get("speed_mps") if exact else None}
        if update.get("sent_at"):
            out["sent_at"] = update["sent_at"]
    return out


@router.get("/links/{token}", response_model=TrackingView, summary="The current tracking state behind a link")
async def link_state(request: Request, token: str, _: Annotated[Principal, require(Permission.PUBLIC)]):
    link = await links.resolve(request.app.state.pg_pool, token=token)
    if link is None:
        raise NotFound("unknown or expired tracking link")
    return await customer_snapshot(request.app, link["order_id"], link["delivered_at"] is not None)


ROADS_RADIUS_M = 1500.0  # the customer map's offline base: roads this far around the delivery


async def _graph(app):
    """The road graph of settings.tracking_graph, loaded once per process (None when not configured)."""
    st = app.state
    if getattr(st, "tracking_graph", None) is None and st.settings.tracking_graph:
        from routing import graph as graph_mod

        source = st.settings.tracking_graph
        st.tracking_graph = await asyncio.to_thread(
            lambda: graph_mod.default_city(progress=False) if source == "default" else graph_mod.load(source, progress=False))
    return getattr(st, "tracking_graph", None)


def roads_around(g, lat: float, lng: float, radius_m: float = ROADS_RADIUS_M) -> dict:
    """GeoJSON LineStrings of the graph's streets (one per street piece) with both ends within radius_m."""
    import numpy as np

    from routing.graph import haversine_m

    near = haversine_m(g.lat, g.lng, lat, lng) <= radius_m
    e = np.flatnonzero(near[g.tail] & near[g.head] & ((g.twin < 0) | (np.arange(g.n_edges) < g.twin)))
    feats = []
    for i in e[:20_000]:
        a, b = g.geom_indptr[i], g.geom_indptr[i + 1]
        coords = [[round(float(x), 6), round(float(y), 6)] for x, y in zip(g.geom_lng[a:b], g.geom_lat[a:b], strict=True)]
        feats.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": coords}, "properties": {"kind": "road"}})
    return {"type": "FeatureCollection", "features": feats}


@router.get("/links/{token}/map", summary="The customer map's base: the delivery point and the roads around it")
async def link_map(request: Request, token: str, _: Annotated[Principal, require(Permission.PUBLIC)]) -> dict:
    """Offline map data from our own graph (no tile server needed); roads are empty when no graph is configured."""
    st = request.app.state
    link = await links.resolve(st.pg_pool, token=token)
    if link is None:
        raise NotFound("unknown or expired tracking link")
    d = await eta.driver_of_order(st.redis, prefix=st.settings.redis_prefix, order_id=link["order_id"])
    plan = await eta.read_plan(st.redis, prefix=st.settings.redis_prefix, driver_id=d) if d is not None else None
    stop = next((s for s in (plan or {}).get("stops", ()) if s.get("order_id") == link["order_id"]), None)
    if stop is None:
        return {"destination": None, "roads": {"type": "FeatureCollection", "features": []}}
    g = await _graph(request.app)
    roads = roads_around(g, float(stop["lat"]), float(stop["lng"])) if g is not None else {"type": "FeatureCollection", "features": []}
    return {"destination": {"lat": stop["lat"], "lng": stop["lng"]}, "roads": roads}


@ws_router.websocket("/ws/track/{token}")
async def track_socket(websocket: WebSocket, token: str, _: Annotated[Principal, ws_require(Permission.PUBLIC)]):
    """Pushes {type: "update", status, eta: {earliest, latest}, position: {lat, lng, exact, ...}} as the driver moves."""
    app = websocket.app
    _, fanout = _state(app)
    async with app.state.tracking_connect_sem:
        link = await links.resolve(app.state.pg_pool, token=token)
    if link is None:
        await websocket.close(code=1008, reason="unknown or expired tracking link")
        return
    order_id = link["order_id"]
    delivered = link["delivered_at"] is not None
    exact_within = app.state.settings.tracking_exact_within_stops
    await websocket.accept()
    async with app.state.tracking_connect_sem:
        driver_id = await eta.driver_of_order(app.state.redis, prefix=app.state.settings.redis_prefix, order_id=order_id)
        snapshot = await customer_snapshot(app, order_id, delivered)
    inbox = await fanout.watch(driver_id) if driver_id is not None else Inbox()
    last_sent = [time.monotonic()]
    view_key = (order_id, delivered)

    async def heartbeat() -> None:
        # The "at least every 30 s" push: one sleeping task per watcher that wakes the pump when
        # nothing went out for SNAPSHOT_EVERY_S, instead of a timer armed per message.
        while True:
            await asyncio.sleep(max(0.5, last_sent[0] + SNAPSHOT_EVERY_S - time.monotonic()))
            if time.monotonic() - last_sent[0] >= SNAPSHOT_EVERY_S:
                inbox.put(SNAPSHOT)
                last_sent[0] = time.monotonic()

    async def pump() -> None:
        items = inbox.items
        while True:
            if not items:
                await inbox.wait()
                continue
            update = items.popleft()
            if update is SNAPSHOT:
                async with app.state.tracking_connect_sem:
                    text = orjson.dumps(await customer_snapshot(app, order_id, delivered)).decode()
            else:
                # The update dict is shared by every watcher of the driver: a second watcher of the
                # same order (the customer's phone and laptop) reuses the first one's text.
                views = update.get("_views")
                if views is None:
                    update["_views"] = views = {}
                text = views.get(view_key)
                if text is None:
                    view = customer_view(update, order_id=order_id, exact_within=exact_within, delivered=delivered)
                    views[view_key] = text = orjson.dumps(view).decode()
            # Hold nothing of this update while waiting for the next: the shared dict (and the
            # views of every watcher of the driver) can be freed as soon as the last watcher sent it,
            # instead of living on, a second at a time, through young garbage collections.
            update = views = view = None
            try:
                await websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the client left; the receive loop below notices and cleans up
            text = None
            last_sent[0] = time.monotonic()

    tasks = []
    try:
        await websocket.send_text(orjson.dumps(snapshot).decode())
        tasks = [asyncio.create_task(pump()), asyncio.create_task(heartbeat())]
        while True:  # the client says nothing; a receive returns when it leaves
            if (await websocket.receive())["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        for t in tasks:
            t.cancel()
        if driver_id is not None:
            await fanout.unwatch(driver_id, inbox)

__all__ = ["customer_view", "router", "ws_router", "PingIn"]
