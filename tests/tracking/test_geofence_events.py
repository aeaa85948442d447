"""Fixes run through the geofence engine's per-driver state machine; its events go out through the outbox."""

from __future__ import annotations

import time

import pytest

from tests.tracking.conftest import inbound, ping
from tracking import eta
from tracking.ingest import Pipeline, default_stages

pytest.importorskip("geofence.hysteresis")

# A square zone of ~1.1 km around (60.17, 24.94).
ZONE = "POLYGON((24.93 60.165, 24.95 60.165, 24.95 60.175, 24.93 60.175, 24.93 60.165))"


@pytest.fixture
async def zone(pool, new_driver_id):
    code = f"z-{new_driver_id()}"
    await pool.execute("INSERT INTO service_zones (code, name, kind, area, base_fee, currency, active)"
                       " VALUES ($1, 'Test zone', 'delivery', ST_Multi(ST_GeomFromText($2, 4326)), '0', 'EUR', true)", code, ZONE)
    yield code
    await pool.execute("DELETE FROM service_zones WHERE code = $1", code)


async def _events(pool, driver_id):
    return await pool.fetch("SELECT type, payload FROM outbox WHERE aggregate = 'driver' AND aggregate_id = $1 ORDER BY id",
                            str(driver_id))


async def test_entering_and_leaving_a_zone_emit_events_once_and_a_late_fix_fires_nothing(zone, tsettings, pool, redis, new_driver_id):
    d = new_driver_id()
    pipe = Pipeline(settings=tsettings, pool=pool, redis=redis, stages=default_stages(settings=tsettings, pool=pool, redis=redis))
    t0 = time.time() - 200
    # Outside (south), drive north through the zone and out the other side: 10 m/s, one fix per 2 s.
    lats = [60.160 + i * 0.00018 for i in range(100)]  # 60.160 → 60.178
    for i, lat in enumerate(lats):
        await pipe.process([inbound(ping(d, i, ts=t0 + 2 * i, lat=lat, lng=24.94, accuracy_m=5.0))])
    evs = await _events(pool, d)
    kinds = [e["type"] for e in evs if e["type"].startswith("zone.")]
    assert kinds[:1] == ["zone.entered"] and "zone.exited" in kinds
    assert all('"zone_id"' in e["payload"] for e in evs if e["type"].startswith("zone."))
    # A late fix from inside the zone (older than the newest) is stored but fires nothing backwards.
    before = len(await _events(pool, d))
    res = await pipe.process([inbound(ping(d, 1000, ts=t0 + 60, lat=60.170, lng=24.94))])
    assert res.accepted[0].late and len(await _events(pool, d)) == before


async def test_arrival_at_the_next_planned_stop_is_an_event(tsettings, pool, redis, new_driver_id):
    d = new_driver_id()
    await eta.write_plan(redis, prefix=tsettings.redis_prefix, driver_id=d,
                         stops=[{"stop_id": f"stop-{d}", "order_id": f"o-{d}", "lat": 60.1800, "lng": 24.9400}])
    pipe = Pipeline(settings=tsettings, pool=pool, redis=redis, stages=default_stages(settings=tsettings, pool=pool, redis=redis))
    t0 = time.time() - 300
    for i in range(90):  # 60.1740 → the stop (67 fixes), then parked there
        lat = min(60.1740 + i * 0.00009, 60.1800)
        await pipe.process([inbound(ping(d, i, ts=t0 + 2 * i, lat=lat, lng=24.94, accuracy_m=5.0))])
    kinds = [e["type"] for e in await _events(pool, d)]
    assert kinds.count("stop.arriving") == 1 and kinds.count("stop.arrived") == 1
    assert kinds.index("stop.arriving") < kinds.index("stop.arrived")


async def test_two_replicas_taking_turns_on_a_driver_see_the_same_events_as_one(zone, tsettings, pool, redis, new_driver_id):
    # Each replica keeps the trackers it wrote last and reuses one only while Redis still holds
    # its snapshot; a driver whose fixes went to the other replica meanwhile must be rebuilt.
    one, d = new_driver_id(), new_driver_id()
    pipes = [Pipeline(settings=tsettings, pool=pool, redis=redis, stages=default_stages(settings=tsettings, pool=pool, redis=redis))
             for _ in range(3)]
    t0 = time.time() - 200
    lats = [60.160 + i * 0.00018 for i in range(100)]  # south of the zone, through it, out the north side
    turns = [0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0]  # replica of each chunk of 9 fixes (shared-subscription luck)
    for i, lat in enumerate(lats):
        await pipes[2].process([inbound(ping(one, i, ts=t0 + 2 * i, lat=lat, lng=24.94, accuracy_m=5.0))])
        await pipes[turns[i // 9]].process([inbound(ping(d, i, ts=t0 + 2 * i, lat=lat, lng=24.94, accuracy_m=5.0))])

    def seen(rows):
        return [(e["type"], e["payload"]) for e in rows if e["type"].startswith("zone.")]

    alone = [(k, p.replace(str(one), "D")) for k, p in seen(await _events(pool, one))]
    shared = [(k, p.replace(str(d), "D")) for k, p in seen(await _events(pool, d))]
    assert [k for k, _ in alone][:1] == ["zone.entered"] and "zone.exited" in [k for k, _ in alone]
    assert shared == alone
