"""Task lists go out only when their content changed; a plan over unchanged inputs can be skipped."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core.models import Depot, Driver
from dispatch import planner
from dispatch.models import DeliveryJob, Shift
from dispatch.service import point
from dispatch.travel import StraightLine

# 170 km from the Helsinki depot: no job of another test can reach these drivers within its window,
# so they stay idle whatever else is open in this database.
FAR = (61.4978, 23.7610)


@pytest.fixture
def plan_settings(settings):
    return settings.model_copy(update={"dispatch_graph": "", "dispatch_region": f"r{uuid.uuid4().hex[:6]}",
                                       "dispatch_time_limit_s": 0.5})


async def _messages(pubsub, *, wait_s: float = 0.3) -> list[dict]:
    out, deadline = [], asyncio.get_running_loop().time() + wait_s
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if msg is not None:
            out.append(msg)
    return out


def _result(version: int, lists: dict[int, list[dict]]) -> planner.PlanResult:
    now = datetime.now(UTC).isoformat()
    published = {d: {"version": version, "driver_id": d, "generated_at": now, "stops": stops} for d, stops in lists.items()}
    return planner.PlanResult(version, None, {}, {}, 0.0, 0.0, published)


def _stop(job_id: str, eta_min: int) -> dict:
    return {"seq": 0, "job_id": job_id, "kind": "delivery", "package_code": "SRNTEST", "lat": 60.17, "lng": 24.94,
            "address": "x", "recipient_name": "y", "window_start": "2026-01-01T10:00:00+00:00",
            "window_end": "2026-01-01T12:00:00+00:00", "eta": f"2026-01-01T10:{eta_min:02d}:00+00:00", "state": "assigned",
            "service_s": 120.0, "idempotency_key": "k"}


async def test_unchanged_lists_are_not_published_again_and_keep_their_version(redis, plan_settings):
    drivers = list(range(9_000_001, 9_000_021))  # 20 drivers, ids no test database uses
    lists = {d: [] for d in drivers}
    lists[drivers[0]] = [_stop(str(uuid.uuid4()), 5)]
    pubsub = redis.pubsub()
    await pubsub.subscribe(*[planner.tasks_channel(plan_settings, d) for d in drivers])
    try:
        first = await planner.publish_tasks(_result(100, lists), redis=redis, settings=plan_settings)
        assert first == set(drivers) and len(await _messages(pubsub)) == len(drivers)
        for version in (101, 102, 103):  # three more plans with the same lists
            result = _result(version, lists)
            assert await planner.publish_tasks(result, redis=redis, settings=plan_settings) == set()
            assert all(doc["version"] == 100 for doc in result.published.values())  # what the drivers hold
        assert await _messages(pubsub) == []
        stored = [json.loads(raw)["version"] for raw in await redis.mget([f"{plan_settings.redis_prefix}tasks:last:{d}" for d in drivers])]
        assert stored == [100] * len(drivers)

        # One driver's list changes (a new ETA): only that list goes out, under the new version.
        lists[drivers[0]] = [_stop(lists[drivers[0]][0]["job_id"], 9)]
        assert await planner.publish_tasks(_result(104, lists), redis=redis, settings=plan_settings) == {drivers[0]}
        got = await _messages(pubsub)
        assert [m["channel"].decode() for m in got] == [planner.tasks_channel(plan_settings, drivers[0])]
        assert json.loads(got[0]["data"])["version"] == 104
        stored = [json.loads(raw)["version"] for raw in await redis.mget([f"{plan_settings.redis_prefix}tasks:last:{d}" for d in drivers])]
        assert stored == [104] + [100] * (len(drivers) - 1)

        # A new leader sends every list once, each under the version its driver holds.
        assert await planner.publish_tasks(_result(105, lists), redis=redis, settings=plan_settings, force=True) == set()
        versions = sorted(json.loads(m["data"])["version"] for m in await _messages(pubsub))
        assert versions == sorted([104] + [100] * (len(drivers) - 1))
    finally:
        await pubsub.aclose()


async def test_a_publication_cut_short_is_sent_again_by_the_next_plan(redis, plan_settings):
    """The stored copy (GET /v1/driver/tasks) is written last: a list missing there is different, so it goes out."""
    driver = 9_000_100
    await redis.delete(f"{plan_settings.redis_prefix}tasks:last:{driver}")
    assert await planner.publish_tasks(_result(7, {driver: []}), redis=redis, settings=plan_settings) == {driver}
    await redis.delete(f"{plan_settings.redis_prefix}tasks:last:{driver}")  # as if the planner died before the last write
    assert await planner.publish_tasks(_result(8, {driver: []}), redis=redis, settings=plan_settings) == {driver}
    assert json.loads(await redis.get(f"{plan_settings.redis_prefix}tasks:last:{driver}"))["version"] == 8


async def test_idle_drivers_get_an_empty_list_once_across_several_plans(app, client, redis, plan_settings, make_driver):
    idle = [await make_driver(at=FAR) for _ in range(4)]
    lease = planner.Lease(redis, planner.lease_key(plan_settings))
    assert await lease.acquire_or_renew()

    async def plan() -> planner.PlanResult:
        result = await planner.replan(sessions=app.state.sessions, redis=redis, settings=plan_settings, lease=lease,
                                      reason="test", model=StraightLine())
        await planner.publish_tasks(result, redis=redis, settings=plan_settings)
        return result

    first = await plan()
    for d in idle:  # an idle driver's list is empty: no depot call that loads nothing (its ETA moved with the clock)
        assert first.published[d.driver_id]["stops"] == []
    pubsub = redis.pubsub()
    await pubsub.subscribe(*[planner.tasks_channel(plan_settings, d.driver_id) for d in idle])
    try:
        for _ in range(3):
            result = await plan()
            assert not {d.driver_id for d in idle} & result.changed
            assert all(result.published[d.driver_id]["version"] == first.published[d.driver_id]["version"] for d in idle)
        assert await _messages(pubsub) == []
    finally:
        await pubsub.aclose()
    for d in idle:  # a reconnecting app still reads its list
        tasks = (await client.get("/v1/driver/tasks", headers=d.headers)).json()
        assert tasks["stops"] == [] and tasks["version"] == first.published[d.driver_id]["version"]

    # The fingerprint a plan leaves behind is what the next snapshot reads, when nothing happened in between.
    async with app.state.sessions() as db:
        snap = await planner.snapshot(db, redis, plan_settings)
    assert planner.inputs_fingerprint(snap) == result.inputs


def _snap(n_drivers: int, jobs: list[DeliveryJob]) -> planner.Snapshot:
    now = datetime.now(UTC)
    depot = Depot(id=1, name="d", location=point(60.17, 24.94))
    drivers = [(Driver(id=k + 1, display_name="x", active=True),
                Shift(id=k + 1, driver_id=k + 1, started_at=now - timedelta(hours=1)), None) for k in range(n_drivers)]
    return planner.Snapshot(now, jobs, drivers, {1: depot}, {k + 1: (60.17 + 0.01 * k, 24.94) for k in range(n_drivers)})


def _job(state: str, driver_id: int | None = None) -> DeliveryJob:
    now = datetime.now(UTC)
    return DeliveryJob(id=uuid.uuid4(), state=state, state_reason="", attempts=0, driver_id=driver_id, sequence=1,
                       pickup=point(60.17, 24.94), dropoff=point(60.18, 24.95), window_start=now,
                       window_end=now + timedelta(hours=2))


def test_an_interval_plan_is_skipped_only_when_nothing_changed_and_nothing_waits():
    snap = _snap(1000, [_job("picked_up", 1)])
    inputs = planner.inputs_fingerprint(snap)
    assert not planner.needs_solve(snap, inputs=inputs, unchanged_since=inputs)
    assert planner.needs_solve(snap, inputs=inputs, unchanged_since=None)  # a new leader always plans
    # Drivers moved and the clock ran: not an input (ETAs are tracking's live watch).
    moved = planner.Snapshot(snap.now + timedelta(minutes=5), snap.jobs, snap.drivers, snap.depots,
                             {d: (lat + 0.01, lng) for d, (lat, lng) in snap.positions.items()})
    assert planner.inputs_fingerprint(moved) == inputs
    # A new job, a failed one, a driver going on or off duty: the plan runs.
    assert planner.inputs_fingerprint(_snap(1000, snap.jobs + [_job("created")])) != inputs
    failed = _job("picked_up", 1)
    base = _snap(1000, [failed])
    before = planner.inputs_fingerprint(base)
    failed.state = "failed"
    assert planner.inputs_fingerprint(base) != before
    assert planner.inputs_fingerprint(_snap(1001, snap.jobs)) != inputs
    assert planner.inputs_fingerprint(_snap(999, snap.jobs)) != inputs
    # A job waiting for a van (or one to re-sequence) keeps the interval re-plan even when nothing changed.
    waiting = _snap(10, [_job("created")])
    w = planner.inputs_fingerprint(waiting)
    assert planner.needs_solve(waiting, inputs=w, unchanged_since=w)


async def test_a_silent_driver_raises_an_exception_that_closes_when_a_fix_arrives(app, redis, plan_settings, make_driver, pool):
    """The silent watch runs every second of the planner loop; heard-from drivers are closed in one statement."""
    import orjson

    from core import fleetstate
    from dispatch import watch

    quiet, heard = await make_driver(at=FAR), await make_driver(at=FAR)
    later = datetime.now(UTC) + timedelta(seconds=plan_settings.dispatch_silent_after_s + 5)
    await redis.hset(fleetstate.live_key(plan_settings.redis_prefix), str(heard.driver_id),
                     orjson.dumps({"lat": FAR[0], "lng": FAR[1], "ts": later.timestamp()}))
    await watch.silent_drivers(sessions=app.state.sessions, redis=redis, settings=plan_settings, on_release=lambda: None, now=later)

    async def open_for(d) -> int:
        return await pool.fetchval("SELECT count(*) FROM dispatch_exceptions WHERE kind='silent_driver' AND subject=$1 "
                                   "AND resolved_at IS NULL", str(d.driver_id))

    assert await open_for(quiet) == 1 and await open_for(heard) == 0
    await redis.hset(fleetstate.live_key(plan_settings.redis_prefix), str(quiet.driver_id),
                     orjson.dumps({"lat": FAR[0], "lng": FAR[1], "ts": later.timestamp()}))
    await watch.silent_drivers(sessions=app.state.sessions, redis=redis, settings=plan_settings, on_release=lambda: None, now=later)
    assert await open_for(quiet) == 0
