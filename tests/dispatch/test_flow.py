"""The chain: order.paid → job → plan → task list → pickup scan → arrival → delivery scan + proof → delivery.completed."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core import events
from core.consumer import Consumer
from dispatch import events as devents
from dispatch import planner, service
from dispatch.travel import StraightLine
from tests.dispatch.conftest import DEPOT, delivery_body


def order_paid_payload(lat: float, lng: float, depot_id: int) -> dict:
    now = datetime.now(UTC)
    return {"order_id": str(uuid.uuid4()), "order_number": "SO-1001", "depot_id": depot_id,
            "dropoff": {"lat": lat, "lng": lng, "address": "Aleksanterinkatu 52, Helsinki"},
            "recipient_name": "Aino", "recipient_phone": "+358401234567",
            "window_start": now.isoformat(), "window_end": (now + timedelta(hours=3)).isoformat(),
            "weight_kg": 2.5, "volume_l": 8, "parcels": 1, "skills": [], "priority": 0}


async def _consume_order_paid(app, redis, settings, payload, *, event_id=None):
    async with app.state.sessions() as db, db.begin():
        await events.emit(db, type="order.paid", payload=payload, aggregate="order", aggregate_id=payload["order_id"],
                          event_id=event_id)
    from core.relay import Relay

    relay = Relay(pool=app.state.pg_pool, redis=redis, prefix=settings.redis_prefix)
    await relay.drain()
    consumer = Consumer(group=devents.JOBS_GROUP, handler=devents.on_order_paid, db=app.state.sessions, redis=redis,
                        prefix=settings.redis_prefix, types=["order.paid"])
    await consumer.run_until_idle()
    return consumer


async def test_order_paid_becomes_one_job_even_when_delivered_twice(app, redis, settings, depot, pool):
    payload = order_paid_payload(60.171, 24.941, depot["id"])
    event_id = uuid.uuid4()
    await _consume_order_paid(app, redis, settings, payload, event_id=event_id)
    # The same event again in the stream (a relay re-send after a crash): no second effect.
    await redis.xadd(events.stream_key(settings.redis_prefix), {
        "event_id": str(event_id), "type": "order.paid", "aggregate": "order", "aggregate_id": payload["order_id"],
        "payload": json.dumps(payload), "created_at": ""})
    consumer = Consumer(group=devents.JOBS_GROUP, handler=devents.on_order_paid, db=app.state.sessions, redis=redis,
                        prefix=settings.redis_prefix, types=["order.paid"])
    await consumer.run_until_idle()
    n = await pool.fetchval("SELECT count(*) FROM delivery_jobs WHERE idempotency_key=$1", f"order:{payload['order_id']}")
    assert n == 1


async def _relay(app, redis, settings):
    from core.relay import Relay

    await Relay(pool=app.state.pg_pool, redis=redis, prefix=settings.redis_prefix).drain()


@pytest.fixture
def plan_settings(settings):
    return settings.model_copy(update={"dispatch_graph": "", "dispatch_region": f"r{uuid.uuid4().hex[:6]}",
                                       "dispatch_time_limit_s": 0.5})


async def test_paid_order_is_planned_picked_up_delivered_with_proof_and_completed(
        app, client, redis, settings, plan_settings, depot, make_driver, pool, dispatcher):
    driver = await make_driver(at=DEPOT)
    payload = order_paid_payload(60.1745, 24.9500, depot["id"])
    await _consume_order_paid(app, redis, settings, payload)
    job_id = await pool.fetchval("SELECT id FROM delivery_jobs WHERE idempotency_key=$1", f"order:{payload['order_id']}")
    # Other tests' drivers are on duty in this database too: pin the job to ours.
    r = await client.post(f"/v1/fleet/jobs/{job_id}/reassign", headers=dispatcher.headers,
                          json={"driver_id": driver.driver_id, "reason": "test driver"})
    assert r.status_code == 200, r.text

    lease = planner.Lease(redis, planner.lease_key(plan_settings))
    assert await lease.acquire_or_renew()
    result = await planner.replan(sessions=app.state.sessions, redis=redis, settings=plan_settings, lease=lease,
                                  reason="test", model=StraightLine())
    assert result is not None and str(job_id) not in result.unassigned
    await planner.publish_tasks(result, redis=redis, settings=plan_settings)

    # The driver's task list: load at the depot first (the parcel is on the load list), then the drop-off.
    tasks = (await client.get("/v1/driver/tasks", headers=driver.headers)).json()
    assert tasks["stops"][0]["kind"] == "depot"
    mine = [s for s in tasks["stops"] if s["job_id"] == str(job_id)]
    assert [s["kind"] for s in mine] == ["delivery"]
    assert mine[0]["package_code"] in tasks["stops"][0]["load"]
    assert (await client.post("/v1/driver/tasks/ack", headers=driver.headers, json={"version": tasks["version"]})).status_code == 204
    code = mine[0]["package_code"]

    # Another driver cannot pick it up; ours can.
    other = await make_driver(at=DEPOT)
    r = await client.post("/v1/driver/scans", headers=other.headers, json={"kind": "pickup", "code": code, "lat": DEPOT[0], "lng": DEPOT[1]})
    assert r.status_code == 403 and "not on your task list" in r.json()["detail"]
    r = await client.post("/v1/driver/scans", headers=driver.headers, json={"kind": "pickup", "code": code, "lat": DEPOT[0], "lng": DEPOT[1]})
    assert r.status_code == 200 and r.json()["state"] == "out_for_delivery"  # picked up, and it is the next stop

    # A delivery scan far from the door is refused without a reason…
    r = await client.post("/v1/driver/scans", headers=driver.headers,
                          json={"kind": "delivery", "code": code, "lat": 60.1800, "lng": 24.9500, "accuracy_m": 10})
    assert r.status_code == 403 and "from the drop-off" in r.json()["detail"]
    # …and accepted at the door.
    r = await client.post("/v1/driver/scans", headers=driver.headers,
                          json={"kind": "delivery", "code": code, "lat": 60.17452, "lng": 24.95005, "accuracy_m": 8})
    assert r.status_code == 200 and r.json()["inside_geofence"] is True and r.json()["state"] == "arriving"

    # Proof: the customer's one-time code.
    otp = service.delivery_otp(settings.jwt_secret, job_id)
    r = await client.post(f"/v1/driver/deliveries/{job_id}/proof", headers=driver.headers, json={"kind": "otp", "otp": otp})
    assert r.status_code == 200 and r.json()["state"] == "delivered"

    states = [h["to_state"] for h in (await client.get(f"/v1/deliveries/{job_id}/history", headers=dispatcher.headers)).json()]
    assert states == ["created", "planned", "assigned", "picked_up", "out_for_delivery", "arriving", "delivered"]
    types = [r["type"] for r in await pool.fetch("SELECT type FROM outbox WHERE aggregate_id=$1 ORDER BY id", str(job_id))]
    assert types[-1] == "delivery.completed" and types.count("delivery.completed") == 1
    async with app.state.sessions() as db:
        ok, bad = await service.verify_custody(db=db, job_id=job_id)
    assert ok and bad is None
    # The refused scan is visible to dispatchers, ranked.
    exc = (await client.get("/v1/fleet/exceptions", headers=dispatcher.headers)).json()
    assert any(e["kind"] == "scan_refused" and e["driver_id"] == other.driver_id for e in exc)


async def test_custody_records_cannot_be_altered(app, pool, client, redis, settings, plan_settings, depot, make_driver):
    import asyncpg

    driver = await make_driver(at=DEPOT)
    r = await client.post("/v1/deliveries", headers={**(await _dispatcher_headers(client, app)), "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
                          json=delivery_body(60.172, 24.945))
    job_id = r.json()["id"]
    # Other tests' drivers are on duty too: pin the job to ours, as a dispatcher would.
    r2 = await client.post(f"/v1/fleet/jobs/{job_id}/reassign", headers=await _dispatcher_headers(client, app),
                           json={"driver_id": driver.driver_id, "reason": "test"})
    assert r2.status_code == 200, r2.text
    lease = planner.Lease(redis, planner.lease_key(plan_settings))
    await lease.acquire_or_renew()
    await planner.replan(sessions=app.state.sessions, redis=redis, settings=plan_settings, lease=lease, reason="t", model=StraightLine())
    code = r.json()["package_code"]
    r = await client.post("/v1/driver/scans", headers=driver.headers, json={"kind": "pickup", "code": code, "lat": DEPOT[0], "lng": DEPOT[1]})
    assert r.status_code == 200, r.text
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE custody_records SET lat = 0 WHERE job_id=$1", uuid.UUID(job_id))


async def _dispatcher_headers(client, app):
    from tests.fixtures_api import Account  # noqa: F401 - documents where accounts come from
    from core import auth
    from core.rbac import Role

    s = app.state.settings
    async with app.state.sessions() as db, db.begin():
        from core import identity

        user = await identity.create_user(db=db, email=f"d-{uuid.uuid4().hex[:8]}@example.test", password="dispatcher pw 1",
                                          roles={Role.DISPATCHER})
        uid = user.id
    token = auth.issue_access_token(secret=s.jwt_secret, user_id=uid, roles={Role.DISPATCHER}, mfa=True, ttl_s=300)
    return {"Authorization": f"Bearer {token}"}


async def test_going_off_duty_returns_unstarted_jobs_to_the_planner(app, client, redis, plan_settings, depot, make_driver, pool):
    driver = await make_driver(at=DEPOT)
    h = await _dispatcher_headers(client, app)
    ids = []
    for i in range(3):
        r = await client.post("/v1/deliveries", headers={**h, "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
                              json=delivery_body(60.17 + i * 0.002, 24.94))
        ids.append(uuid.UUID(r.json()["id"]))
    lease = planner.Lease(redis, planner.lease_key(plan_settings))
    await lease.acquire_or_renew()
    await planner.replan(sessions=app.state.sessions, redis=redis, settings=plan_settings, lease=lease, reason="t", model=StraightLine())
    rows = await pool.fetch("SELECT state, driver_id FROM delivery_jobs WHERE id = ANY($1)", ids)
    assert all(r["state"] == "assigned" and r["driver_id"] is not None for r in rows)
    mine = [r for r in rows if r["driver_id"] == driver.driver_id]
    r = await client.post("/v1/driver/shift/end", headers=driver.headers)
    assert r.status_code == 200
    rows = await pool.fetch("SELECT state, driver_id FROM delivery_jobs WHERE id = ANY($1) AND driver_id IS NULL", ids)
    assert len(rows) >= len(mine)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE type='driver.off_duty' AND aggregate_id=$1", str(driver.driver_id)) == 1


async def test_tracking_stop_arriving_marks_the_job_arriving_once(app, client, redis, plan_settings, depot, make_driver, pool):
    from core.events import Event

    driver = await make_driver(at=DEPOT)
    job_id, _ = await _picked_up_job(app, client, redis, plan_settings, driver, 60.171, 24.944)
    event = Event(event_id=uuid.uuid4(), type="stop.arriving", payload={"driver_id": driver.driver_id, "stop_id": job_id})
    for _ in range(2):  # a repeated detection changes nothing
        async with app.state.sessions() as db, db.begin():
            await devents.on_stop_event(db, event)
    states = [r["to_state"] for r in await pool.fetch("SELECT to_state FROM job_transitions WHERE job_id=$1 ORDER BY id", uuid.UUID(job_id))]
    assert states[-2:] == ["out_for_delivery", "arriving"] and states.count("arriving") == 1
    # The plan projection tracking reads lists the job as the driver's stop.
    plan = await redis.hget(f"{plan_settings.redis_prefix}tracking:plans", str(driver.driver_id))
    assert plan is not None and job_id in plan.decode()


async def test_a_driver_far_from_the_road_path_of_the_leg_raises_off_route(app, client, redis, plan_settings, depot, make_driver, pool):
    import orjson

    from dispatch import watch
    from dispatch.travel import RoadGraph
    from routing import graph

    driver = await make_driver(at=DEPOT)
    job_id, _ = await _picked_up_job(app, client, redis, plan_settings, driver, 60.1745, 24.9500)
    model = RoadGraph(graph.default_city(progress=False))
    live_key = f"{plan_settings.redis_prefix}tracking:live"

    async def at(lat, lng):
        await redis.hset(live_key, str(driver.driver_id), orjson.dumps({"lat": lat, "lng": lng, "ts": time.time()}))
        return await watch.off_route_drivers(sessions=app.state.sessions, redis=redis, settings=plan_settings, model=model)

    assert await pool.fetchval("SELECT state FROM delivery_jobs WHERE id=$1", uuid.UUID(job_id)) == "out_for_delivery"
    # 2 km north of every point of the leg's road path (depot → drop-off): off route.
    from routing import paths

    leg = paths.route(model.graph, DEPOT, (60.1745, 24.9500), max_snap_m=None)
    assert driver.driver_id in await at(float(leg.lat.max()) + 0.018, float(leg.lng.mean()))
    exc = await pool.fetchrow("SELECT * FROM dispatch_exceptions WHERE kind='off_route' AND subject=$1 AND resolved_at IS NULL",
                              str(driver.driver_id))
    assert exc is not None and "from the road path" in exc["detail"]
    # At the stop: nobody is off route while parking there; the exception is resolved.
    assert driver.driver_id not in await at(60.1745, 24.9500)
    assert await pool.fetchval("SELECT count(*) FROM dispatch_exceptions WHERE kind='off_route' AND subject=$1 AND resolved_at IS NULL",
                               str(driver.driver_id)) == 0


def test_distance_to_polyline():
    from dispatch.watch import distance_to_polyline_m

    line_lat = [60.0, 60.0]
    line_lng = [24.0, 24.01]
    assert distance_to_polyline_m(60.0, 24.005, line_lat, line_lng) < 0.01
    assert abs(distance_to_polyline_m(60.001, 24.005, line_lat, line_lng) - 111.3) < 0.5


async def test_live_eta_past_the_window_raises_late_risk_and_a_drift_asks_for_a_replan(app, redis, settings, plan_settings, depot,
                                                                                   make_driver, pool):
    import orjson

    from dispatch import watch

    driver = await make_driver(at=DEPOT)
    payload = order_paid_payload(60.172, 24.946, depot["id"])
    await _consume_order_paid(app, redis, settings, payload)
    job_id = await pool.fetchval("SELECT id FROM delivery_jobs WHERE idempotency_key=$1", f"order:{payload['order_id']}")
    window_end = await pool.fetchval("SELECT window_end FROM delivery_jobs WHERE id=$1", job_id)
    # As the planner would have: assigned with a planned ETA an hour before the window closes.
    await pool.execute("UPDATE delivery_jobs SET state='assigned', driver_id=$2, eta=window_end - interval '1 hour' WHERE id=$1",
                       job_id, driver.driver_id)
    late = window_end.timestamp() + 1200  # tracking now says: 20 min after the window at the latest
    await redis.hset(f"{settings.redis_prefix}tracking:eta", payload["order_id"],
                     orjson.dumps({"earliest": late - 900, "latest": late, "published_at": time.time(), "driver_id": driver.driver_id}))
    drifted = await watch.eta_watch(sessions=app.state.sessions, redis=redis, settings=settings)
    assert str(job_id) in drifted
    row = await pool.fetchrow("SELECT * FROM dispatch_exceptions WHERE kind='late_risk' AND subject=$1", str(job_id))
    assert row is not None and "after the promised window" in row["detail"]


async def _picked_up_job(app, client, redis, plan_settings, driver, lat: float, lng: float) -> tuple[str, str]:
    """A delivery pinned to `driver`, planned, its task list published, and scanned at the depot: (job id, code)."""
    h = await _dispatcher_headers(client, app)
    r = await client.post("/v1/deliveries", headers={**h, "Idempotency-Key": f"k-{uuid.uuid4().hex}"}, json=delivery_body(lat, lng))
    job_id, code = r.json()["id"], r.json()["package_code"]
    await client.post(f"/v1/fleet/jobs/{job_id}/reassign", headers=h, json={"driver_id": driver.driver_id, "reason": "t"})
    lease = planner.Lease(redis, planner.lease_key(plan_settings))
    await lease.acquire_or_renew()
    result = await planner.replan(sessions=app.state.sessions, redis=redis, settings=plan_settings, lease=lease, reason="t",
                                  model=StraightLine())
    await planner.publish_tasks(result, redis=redis, settings=plan_settings)
    assert (await client.post("/v1/driver/scans", headers=driver.headers,
                              json={"kind": "pickup", "code": code, "lat": DEPOT[0], "lng": DEPOT[1]})).status_code == 200
    return job_id, code
