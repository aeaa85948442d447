"""The fleet-board feed: many fixes in a second make one frame with the newest positions; one read per tick for any number of watchers; /ws/fleet auth."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from core import auth
from core.rbac import Role
from dispatch import feed as feedmod
from dispatch.feed import FleetFeed, Positions, Watcher, columns
from tracking.live import LiveState


def fix(driver_id: int, ts: float, lat: float = 60.17, lng: float = 24.94, **extra) -> dict:
    return {"driver_id": driver_id, "seq": int(ts * 10), "ts": ts, "lat": lat, "lng": lng, "accuracy_m": 5.0,
            "speed_mps": 8.0, "heading_deg": 90.0, **extra}


# --- the throttle, without I/O ----------------------------------------------------------------------------------


def test_many_fixes_within_a_frame_become_one_entry_per_driver_with_the_newest_position():
    p = Positions()
    for i in range(10):  # ten fixes of each of three drivers within one second, offered in several reads
        p.offer([fix(d, 1000 + i / 10, lat=60 + i / 1000) for d in (1, 2, 3)])
    frame = p.take()
    assert [r["driver_id"] for r in frame] == [1, 2, 3]
    assert all(r["ts"] == 1000.9 and r["lat"] == pytest.approx(60.009) for r in frame)
    assert p.take() == []  # nothing moved since


def test_an_older_fix_arriving_late_does_not_move_a_driver_back():
    p = Positions()
    p.offer([fix(7, 2000.0, lat=61.0)])
    p.offer([fix(7, 1999.0, lat=59.0)])
    assert [r["lat"] for r in p.take()] == [61.0]


def test_a_driver_that_did_not_move_is_not_resent_but_stays_in_the_snapshot():
    p = Positions()
    p.offer([fix(1, 10.0), fix(2, 10.0)])
    p.take()
    p.offer([fix(1, 10.0), fix(2, 11.0)])  # driver 1 re-read unchanged
    assert [r["driver_id"] for r in p.take()] == [2]
    assert [r["driver_id"] for r in p.all()] == [1, 2]


def test_frames_are_compact_columns():
    cols = columns([fix(1, 10.04, lat=60.1234567, lng=24.9876543), fix(2, 11.0, heading_deg=None, speed_mps=None)])
    assert cols == {"id": [1, 2], "lat": [60.123457, 60.17], "lng": [24.987654, 24.94], "heading": [90.0, None],
                    "speed": [8.0, None], "ts": [10.0, 11.0]}


def test_a_watcher_that_falls_behind_gets_a_snapshot_instead_of_old_deltas():
    class FakeFeed:
        def snapshot_frame(self):
            return "SNAPSHOT"

    w = Watcher()
    for i in range(feedmod.QUEUE_FRAMES + 3):
        w.offer(f"delta {i}")
    assert w.resync and w.dropped == feedmod.QUEUE_FRAMES

    assert asyncio.run(w.next(FakeFeed())) == "SNAPSHOT"
    w.offer("delta after")
    assert asyncio.run(w.next(FakeFeed())) == "delta after"


# --- on Redis: the per-process loop ----------------------------------------------------------------------------


@pytest.fixture
def prefix(settings):
    return f"{settings.redis_prefix}feed{uuid.uuid4().hex[:6]}:"


async def _frames(w: Watcher) -> list[dict]:
    out = []
    while not w.queue.empty():
        out.append(orjson.loads(w.queue.get_nowait()))
    return out


async def test_a_second_of_updates_reaches_every_watcher_as_one_frame_with_one_read(redis, prefix):
    live = LiveState(redis, prefix)
    await live.update([fix(d, 100.0, lat=60.0) for d in range(1, 6)])
    feed = FleetFeed(redis=redis, prefix=prefix, interval_s=3600)  # ticks driven by the test
    await feed.tick()
    watchers = [Watcher() for _ in range(50)]
    for w in watchers:
        w.queue.put_nowait(feed.snapshot_frame())
        feed.watchers.add(w)
    reads_before = feed.reads

    for i in range(1, 21):  # 20 fixes per driver for drivers 1-3 within the frame interval
        await live.update([fix(d, 100.0 + i / 20, lat=60.0 + i / 1000) for d in (1, 2, 3)])
    await feed.tick()

    assert feed.reads - reads_before == 1  # one read of live state for 50 watchers
    for w in watchers:
        snapshot, delta = await _frames(w)
        assert snapshot["type"] == "snapshot" and snapshot["drivers"]["id"] == [1, 2, 3, 4, 5]
        assert delta["type"] == "positions" and delta["seq"] > snapshot["seq"]
        assert delta["drivers"]["id"] == [1, 2, 3]
        assert delta["drivers"]["lat"] == [60.02] * 3 and delta["drivers"]["ts"] == [101.0] * 3
    await feed.tick()
    assert all(w.queue.empty() for w in watchers)  # nothing moved: no frame

    await redis.hdel(live.keys.live, "5")
    await redis.hdel(live.keys.live_ts, "5")
    await feed.tick()
    assert orjson.loads(feed.snapshot_frame())["drivers"]["id"] == [1, 2, 3, 4]  # a driver tracking dropped is dropped here too


async def test_one_tick_for_a_thousand_moving_drivers_is_cheap(redis, prefix):
    live = LiveState(redis, prefix)
    feed = FleetFeed(redis=redis, prefix=prefix, interval_s=3600)
    w = Watcher()
    feed.watchers.add(w)
    times = []
    for step in range(5):
        await live.update([fix(d, 1000.0 + step, lat=60 + d / 1e5 + step / 1e4) for d in range(1, 1001)])
        await feed.tick()
        times.append(feed.frame_ms)
        frame = orjson.loads(w.queue.get_nowait())
        assert len(frame["drivers"]["id"]) == 1000 and frame["drivers"]["ts"][0] == 1000.0 + step
    print(f"feed tick, 1,000 drivers all moved: {sorted(times)[2]:.1f} ms median (Redis read + frame + fan-out)")


async def test_a_replan_published_by_the_planner_is_announced_to_watchers(redis, prefix, pool):
    feed = FleetFeed(redis=redis, prefix=prefix, pool=pool, interval_s=0.05, check_every_s=3600)
    w = await feed.watch()
    try:
        assert orjson.loads(await w.next(feed))["type"] == "snapshot"
        await pool.execute("INSERT INTO dispatch_plans (region, reason, planner_id, routes, unassigned, objective, churn, solve_ms)"
                           " VALUES ('feedtest', 'test', 't', '{}', '{}', 0, 0, 0)")
        # The tables are only re-checked on a notice (check_every_s is an hour here): the planner's publication is one.
        await redis.publish(f"{prefix}tasks:12345", b"{}")
        deadline = time.monotonic() + 5
        msg = None
        while time.monotonic() < deadline:
            try:
                msg = orjson.loads(await asyncio.wait_for(w.next(feed), 0.5))
            except TimeoutError:
                continue
            if msg["type"] == "changed":
                break
        assert msg is not None and msg["type"] == "changed"
        assert "plan" in msg["what"] and "kpis" in msg["what"]
        assert msg["plan_version"] == await pool.fetchval("SELECT max(version) FROM dispatch_plans")
    finally:
        await feed.unwatch(w)
    assert feed._task is None  # the last watcher leaving stops the loop


async def _next_positions(w: Watcher, feed: FleetFeed, driver: int, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        msg = orjson.loads(await asyncio.wait_for(w.next(feed), max(deadline - time.monotonic(), 0.01)))
        if msg["type"] == "positions" and driver in msg["drivers"]["id"]:
            return msg


async def test_positions_keep_flowing_while_every_database_connection_is_busy(redis, prefix, db_url):
    import asyncpg

    live = LiveState(redis, prefix)
    await live.update([fix(1, 100.0)])
    busy = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
    held = await busy.acquire()  # what a saturated API does to the feed's pool: no connection to be had
    feed = FleetFeed(redis=redis, prefix=prefix, pool=busy, interval_s=0.05, check_every_s=0.1)
    try:
        t0 = time.monotonic()
        w = await feed.watch()
        assert time.monotonic() - t0 < 3.0  # the snapshot does not wait for the database
        assert orjson.loads(await w.next(feed))["drivers"]["id"] == [1]
        await live.update([fix(1, 101.0, lat=60.3)])
        assert (await _next_positions(w, feed, 1))["drivers"]["lat"] == [60.3]
        await feed.unwatch(w)
    finally:
        await busy.release(held)
        await busy.close()


async def test_a_watcher_joining_as_the_last_one_leaves_still_gets_its_frames(redis, prefix):
    live = LiveState(redis, prefix)
    await live.update([fix(2, 100.0)])
    feed = FleetFeed(redis=redis, prefix=prefix, interval_s=0.05)
    first = await feed.watch()
    await feed.stop()  # the loop stopped (its last watcher left a moment ago) ...
    feed.watchers.discard(first)
    joining = asyncio.ensure_future(feed.watch())  # ... and a new board opens while the old one is still leaving
    await asyncio.sleep(0)
    await feed.unwatch(first)
    w = await asyncio.wait_for(joining, 5)
    assert orjson.loads(await w.next(feed))["type"] == "snapshot"
    await live.update([fix(2, 101.0)])
    await _next_positions(w, feed, 2)
    await feed.unwatch(w)
    assert feed._task is None


# --- /ws/fleet -------------------------------------------------------------------------------------------------


def _token(settings, role: Role | None, *, mfa: bool = True) -> str:
    return auth.issue_access_token(secret=settings.jwt_secret, user_id=uuid.uuid4(), roles={role} if role else set(),
                                   mfa=mfa, ttl_s=300)


@pytest.fixture(scope="module")
def ws_client(settings):
    from serena.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(("first", "code", "words"), [
    ("hello", 4401, "sign-in required"),
    ('{"type": "auth", "access_token": "not-a-jwt"}', 4401, "invalid access token"),
    ("CUSTOMER", 4403, "fleet:read"),
    ("DISPATCHER_WITHOUT_TOTP", 4403, "TOTP"),
])
def test_fleet_socket_closes_with_a_reason_without_a_valid_staff_token(ws_client, settings, first, code, words):
    if first == "CUSTOMER":
        first = orjson.dumps({"type": "auth", "access_token": _token(settings, Role.CUSTOMER)}).decode()
    elif first == "DISPATCHER_WITHOUT_TOTP":
        first = orjson.dumps({"type": "auth", "access_token": _token(settings, Role.DISPATCHER, mfa=False)}).decode()
    with ws_client.websocket_connect("/ws/fleet") as ws:
        ws.send_text(first)
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_text()
    assert exc.value.code == code and words in exc.value.reason


def test_fleet_socket_sends_a_snapshot_then_positions_to_a_dispatcher(ws_client, settings):
    import concurrent.futures

    import redis.asyncio as aioredis

    driver = 900_000 + uuid.uuid4().int % 1000
    now = time.time()

    def put(row):  # what tracking's ingest does, on a loop of its own (the test client runs the app's loop)
        async def go():
            r = aioredis.from_url(settings.redis_url)
            try:
                await LiveState(r, settings.redis_prefix).update([row])
            finally:
                await r.aclose()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, go()).result()

    put(fix(driver, now - 1, lat=60.1))
    with ws_client.websocket_connect("/ws/fleet") as ws:
        ws.send_text(orjson.dumps({"type": "auth", "access_token": _token(settings, Role.DISPATCHER)}).decode())
        assert orjson.loads(ws.receive_text())["type"] == "hello"
        snap = orjson.loads(ws.receive_text())
        assert snap["type"] == "snapshot" and driver in snap["drivers"]["id"]
        put(fix(driver, now, lat=60.2))
        while True:
            msg = orjson.loads(ws.receive_text())
            if msg["type"] == "positions" and driver in msg["drivers"]["id"]:
                break
        i = msg["drivers"]["id"].index(driver)
        assert msg["drivers"]["lat"][i] == 60.2 and msg["seq"] > snap["seq"]


def test_fleet_socket_closes_when_its_token_expires_without_a_fresh_one(ws_client, settings):
    short = auth.issue_access_token(secret=settings.jwt_secret, user_id=uuid.uuid4(), roles={Role.DISPATCHER}, mfa=True, ttl_s=2)
    with ws_client.websocket_connect("/ws/fleet") as ws:
        ws.send_text(orjson.dumps({"type": "auth", "access_token": short}).decode())
        assert orjson.loads(ws.receive_text())["type"] == "hello"
        with pytest.raises(WebSocketDisconnect) as exc:
            while True:
                ws.receive_text()
    assert exc.value.code == 4401 and "expired" in exc.value.reason
