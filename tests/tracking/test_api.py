"""Tracking over HTTP and WebSocket: the driver socket and offline batch, fleet positions, refusal counts, customer tracking."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

import orjson
import pytest_asyncio
import websockets

from core.rbac import Role
from tests.tracking.conftest import ping, serving
from tracking import eta, links
from tracking.api import customer_view


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server(app):
    """The session's app on a real port (WebSockets need a server); lifespan already runs in the app fixture."""
    async with serving(app) as where:
        yield where


async def _driver(app, make_account):
    acc = await make_account(Role.DRIVER)
    did = await app.state.pg_pool.fetchval("SELECT id FROM drivers WHERE user_id = $1", acc.user_id)
    if did is None:
        did = await app.state.pg_pool.fetchval(
            "INSERT INTO drivers (user_id, display_name, phone, active) VALUES ($1, 'Test Driver', '', true) RETURNING id",
            acc.user_id)
    return acc, did


async def test_offline_batch_is_stored_with_a_result_per_ping(app, client, make_account):
    acc, d = await _driver(app, make_account)
    t = time.time()
    pings = [ping(d, i, ts=t - 100 + i, lat=60.17 + i * 1e-5) for i in range(5)] + [ping(d, 2, ts=t - 98), {"seq": 9}]
    r = await client.post("/v1/tracking/me/pings", json=pings, headers=acc.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 5 and body["rejected"] == {"duplicate": 1, "schema": 1}
    assert [x["status"] for x in body["results"]] == ["accepted"] * 5 + ["accepted", "rejected"]  # seq 2 is stored
    again = (await client.post("/v1/tracking/me/pings", json=pings[:2], headers=acc.headers)).json()
    assert [x["status"] for x in again["results"]] == ["duplicate", "duplicate"]
    counts = (await client.get("/v1/tracking/me/rejections", headers=acc.headers)).json()
    assert counts == {"driver_id": d, "counts": {"duplicate": 3, "schema": 1}}


async def test_only_drivers_upload_and_only_fleet_staff_read_positions(client, make_account):
    cust = await make_account(Role.CUSTOMER)
    assert (await client.post("/v1/tracking/me/pings", json=[], headers=cust.headers)).status_code == 403
    assert (await client.get("/v1/tracking/positions", headers=cust.headers)).status_code == 403


async def test_driver_websocket_acknowledges_each_frame_after_storing(app, server, client, make_account):
    acc, d = await _driver(app, make_account)
    async with websockets.connect(f"ws://{server}/ws/driver", additional_headers=acc.headers) as ws:
        await ws.send(orjson.dumps(ping(d, 1)).decode())
        assert orjson.loads(await ws.recv()) == {"accepted": [1], "duplicates": [], "rejected": []}
        await ws.send(orjson.dumps([ping(d, 1), ping(d, 2, lat=95)]).decode())
        assert orjson.loads(await ws.recv()) == {"accepted": [], "duplicates": [1], "rejected": [{"seq": 2, "reason": "lat_range"}]}
    dispatcher = await make_account(Role.DISPATCHER)
    rows = (await client.get("/v1/tracking/positions", headers=dispatcher.headers)).json()
    assert any(r["driver_id"] == d and r["seq"] == 1 for r in rows)
    counts = (await client.get(f"/v1/tracking/drivers/{d}/rejections", headers=dispatcher.headers)).json()["counts"]
    assert counts == {"duplicate": 1, "lat_range": 1}


async def test_driver_websocket_needs_a_driver_token(server, make_account):
    cust = await make_account(Role.CUSTOMER)
    try:
        async with websockets.connect(f"ws://{server}/ws/driver", additional_headers=cust.headers) as ws:
            await ws.recv()
        raise AssertionError("a non-driver got a driver socket")
    except websockets.InvalidStatus as exc:
        assert exc.response.status_code == 403
    # Without a header (a browser) the socket opens, and the first message must sign in.
    for first, code in ((None, 4401), ({"type": "auth", "access_token": "nonsense"}, 4401),
                        ({"type": "auth", "access_token": cust.token}, 4403)):
        async with websockets.connect(f"ws://{server}/ws/driver") as ws:
            await ws.send(orjson.dumps(first if first is not None else {"seq": 1}).decode())
            try:
                await ws.recv()
                raise AssertionError("an unauthenticated socket got an answer")
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd.code == code


async def test_browser_driver_signs_in_with_its_first_message(app, server, make_account):
    acc, d = await _driver(app, make_account)
    async with websockets.connect(f"ws://{server}/ws/driver") as ws:
        await ws.send(orjson.dumps({"type": "auth", "access_token": acc.token}).decode())
        assert orjson.loads(await ws.recv()) == {"type": "ready", "driver_id": d}
        await ws.send(orjson.dumps(ping(d, 1)).decode())
        assert orjson.loads(await ws.recv()) == {"accepted": [1], "duplicates": [], "rejected": []}


def test_customer_sees_a_coarse_position_until_the_driver_is_within_n_stops():
    upd = {"lat": 60.17123, "lng": 24.94123, "ts": 1000.0, "heading_deg": 90.0,
           "stops": [{"stop_id": "a", "order_id": "o1", "index": 0, "status": "pending", "eta_earliest": 1100, "eta_latest": 1300},
                     {"stop_id": "b", "order_id": "o2", "index": 1, "status": "pending", "eta_earliest": 1500, "eta_latest": 1800},
                     {"stop_id": "c", "order_id": "o3", "index": 2, "status": "pending", "eta_earliest": 2000, "eta_latest": 2600}]}
    near = customer_view(upd, order_id="o1", exact_within=2)
    assert near["position"]["exact"] and near["position"]["lat"] == 60.17123 and near["status"] == "arriving"
    far = customer_view(upd, order_id="o3", exact_within=2)
    assert not far["position"]["exact"] and far["position"]["heading_deg"] is None
    assert abs(far["position"]["lat"] - 60.17123) > 1e-4 and far["eta"] == {"earliest": 2000, "latest": 2600}
    assert far["stops_before"] == 2 and far["status"] == "on_the_way"


async def test_tracking_link_expires_after_delivery_plus_grace(pool):
    now = dt.datetime.now(dt.UTC)
    token = await links.issue(pool, order_id="order-exp", ttl_s=86400, now=now - dt.timedelta(hours=3))
    assert len(token) >= 43 and (await links.resolve(pool, token=token))["order_id"] == "order-exp"
    assert await links.resolve(pool, token=token + "x") is None
    await links.mark_delivered(pool, order_id="order-exp", at=now - dt.timedelta(hours=2), grace_s=3600)
    assert await links.resolve(pool, token=token) is None  # delivered 2 h ago, grace 1 h
    assert await links.resolve(pool, token=token, now=now - dt.timedelta(hours=1, minutes=30)) is not None


async def test_customer_websocket_gets_position_eta_and_status_as_the_driver_moves(app, server, client, make_account, settings):
    acc, d = await _driver(app, make_account)
    staff = await make_account(Role.DISPATCHER)
    order = f"order-{d}"
    stops = [{"stop_id": f"s-{d}-1", "order_id": f"other-{d}", "lat": 60.1750, "lng": 24.9400},
             {"stop_id": f"s-{d}-2", "order_id": order, "lat": 60.1800, "lng": 24.9450}]
    r = await client.put(f"/v1/tracking/drivers/{d}/plan", json={"version": 1, "stops": stops}, headers=staff.headers)
    assert r.status_code == 204, r.text
    link = (await client.post("/v1/tracking/links", json={"order_id": order}, headers=staff.headers)).json()
    assert (await client.get(f"/v1/tracking/links/{link['token']}", headers={})).json()["status"] == "scheduled"  # no fix yet
    async with websockets.connect(f"ws://{server}{link['ws_path']}") as watcher:
        first = orjson.loads(await asyncio.wait_for(watcher.recv(), 5))
        assert first["order_id"] == order
        r = await client.post("/v1/tracking/me/pings", json=[ping(d, 1, lat=60.1700, lng=24.9350)], headers=acc.headers)
        assert r.json()["accepted"] == 1
        upd = orjson.loads(await asyncio.wait_for(watcher.recv(), 5))
        assert upd["status"] == "on_the_way" and upd["stops_before"] == 1
        assert upd["eta"]["earliest"] < upd["eta"]["latest"]
        assert upd["position"]["exact"] is (1 < settings.tracking_exact_within_stops)
    # An unknown token is refused at the handshake (closed before accept: HTTP 403).
    try:
        async with websockets.connect(f"ws://{server}/ws/track/not-a-token") as bad:
            await asyncio.wait_for(bad.recv(), 5)
        raise AssertionError("an unknown token was served")
    except websockets.InvalidStatus as exc:
        assert exc.response.status_code == 403


def test_eta_intervals_follow_the_plan_order_and_skip_done_stops():
    stops = [{"stop_id": "a", "lat": 60.0, "lng": 24.0, "status": "done"},
             {"stop_id": "b", "lat": 60.01, "lng": 24.0, "service_s": 60},
             {"stop_id": "c", "lat": 60.02, "lng": 24.0}]
    out = eta.compute(stops, lat=60.0, lng=24.0, now=0.0)
    assert [e.stop_id for e in out] == ["b", "c"] and out[0].eta_s < out[1].eta_s
    assert all(e.earliest < e.eta_s < e.latest for e in out)


async def test_delivery_completed_event_expires_the_orders_links_after_the_grace_period(pool):
    import uuid

    from core.events import Event
    from tracking.events import handle_delivery_completed

    token = await links.issue(pool, order_id="order-evt", ttl_s=86400)
    done = time.time() - 7200
    async with pool.acquire() as conn, conn.transaction():
        await handle_delivery_completed(conn, Event(uuid.uuid4(), "delivery.completed", {"order_id": "order-evt", "ts": done}),
                                        grace_s=3600)
    assert await links.resolve(pool, token=token) is None


def test_etas_use_the_routing_engines_travel_times_when_a_graph_is_configured():
    from tests.paths import OSM

    src = OSM / "heidelberg.osm.pbf"
    if not src.exists():
        import pytest

        pytest.skip("shared OSM data not available")
    from routing import graph

    g = graph.load(src, progress=False)
    a, b = 100, 2000
    travel = eta.RoutedTravel(g)
    t = travel(g.lat[a], g.lng[a], g.lat[b], g.lng[b])
    assert t > 0 and travel.cache and travel(g.lat[a], g.lng[a], g.lat[b], g.lng[b]) == t  # second call: cached
    out = eta.compute([{"stop_id": "x", "lat": float(g.lat[b]), "lng": float(g.lng[b]), "service_s": 0}],
                      lat=float(g.lat[a]), lng=float(g.lng[a]), now=0.0, travel=travel)
    assert out[0].eta_s == t


async def test_eta_is_republished_only_when_it_moves_a_minute_or_every_30_seconds(redis, tsettings, new_driver_id):
    from tracking.validate import Fix

    d = new_driver_id()
    order = f"o-{d}"
    await eta.write_plan(redis, prefix=tsettings.redis_prefix, driver_id=d,
                         stops=[{"stop_id": f"s-{d}", "order_id": order, "lat": 60.20, "lng": 24.94}])
    clock = [1000.0]
    speed = [10.0]  # m/s: the stub travel model, so the test can move the ETA at will
    stage = eta.EtaStage(settings=tsettings, redis=redis, clock=lambda: clock[0],
                         travel=lambda a, b, c, e: 3000.0 / speed[0], refresh_s=0.0)
    push = eta.make_push(tsettings, stage)

    async def step(ts: float) -> dict | None:
        f = Fix(d, int(ts), ts, 60.17, 24.94, 5.0, None, None, ts)
        await stage([f])
        await push([f], redis)
        return stage.pending_eta.get(order) and orjson.loads(stage.pending_eta[order])

    first = await step(1000.0)
    assert first is not None and first["latest"] > first["earliest"]
    speed[0] = 10.5  # ETA 14 s earlier: not worth telling the customer
    clock[0] = 1005.0
    assert await step(1005.0) is None
    speed[0] = 5.0  # 300 s later: a change the customer must see
    clock[0] = 1010.0
    moved = await step(1010.0)
    assert moved is not None and moved["latest"] - first["latest"] > 60
    clock[0] = 1041.0  # unchanged, but 31 s since the last push
    assert await step(1041.0) is not None
