"""Customer push: the Redis pub/sub fan-out (bounded inboxes, reference-counted subscriptions, reconnect) and /ws/track's snapshots."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest_asyncio
import websockets

from tests.tracking.conftest import serving
from tracking import api as tracking_api
from tracking import eta, links, live
from tracking.fanout import QUEUE_MAX, SNAPSHOT, Fanout


async def _until(cond, timeout_s: float = 10.0) -> None:
    """Wait for a condition that the system must reach (a liveness bound, not a speed threshold)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def _numsub(redis, channel: str) -> int:
    return dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0)


@pytest_asyncio.fixture(loop_scope="session")
async def fanout(redis, tsettings):
    f = Fanout(redis, tsettings.redis_prefix)
    yield f
    await f.close()


async def test_a_slow_watcher_keeps_only_the_newest_updates_and_does_not_hold_back_the_others(fanout, redis, tsettings,
                                                                                            new_driver_id):
    d = new_driver_id()
    slow = await fanout.watch(d)
    fast = await fanout.watch(d)
    got: list[int] = []

    async def consume():
        while len(got) < QUEUE_MAX + 10:
            got.append((await fast.get())["seq"])

    consumer = asyncio.create_task(consume())
    channel = live.Keys(tsettings.redis_prefix).driver(d)
    for seq in range(QUEUE_MAX + 10):
        await redis.publish(channel, orjson.dumps({"type": "update", "driver_id": d, "seq": seq}))
    await asyncio.wait_for(consumer, 10)
    assert got == list(range(QUEUE_MAX + 10))  # the consuming watcher got every update, in order
    assert [u["seq"] for u in slow.items] == list(range(10, QUEUE_MAX + 10))  # the stalled one: the newest 32


async def test_a_drivers_channel_is_subscribed_while_someone_watches_it(fanout, redis, tsettings, new_driver_id):
    d = new_driver_id()
    channel = live.Keys(tsettings.redis_prefix).driver(d)
    a = await fanout.watch(d)
    b = await fanout.watch(d)
    await _until(lambda: d in fanout.watchers)
    assert await _numsub(redis, channel) == 1  # one subscription per process, however many watchers
    await fanout.unwatch(d, a)
    assert await _numsub(redis, channel) == 1
    await fanout.unwatch(d, b)
    deadline = time.monotonic() + 10
    while await _numsub(redis, channel):
        assert time.monotonic() < deadline, "still subscribed after the last watcher left"
        await asyncio.sleep(0.01)


async def test_after_redis_drops_the_fanout_connection_it_resubscribes_and_asks_watchers_for_a_snapshot(
        fanout, redis, tsettings, new_driver_id):
    d = new_driver_id()
    box = await fanout.watch(d)
    channel = live.Keys(tsettings.redis_prefix).driver(d)
    await _until(lambda: fanout._proto is not None)
    clients = await redis.client_list()
    ours = [c["id"] for c in clients if c.get("name") == fanout.client_name]
    assert len(ours) == 1
    await redis.execute_command("CLIENT", "KILL", "ID", ours[0])
    assert await asyncio.wait_for(box.get(), 10) is SNAPSHOT  # it may have missed updates: the socket re-sends the state
    deadline = time.monotonic() + 10
    while not await _numsub(redis, channel):
        assert time.monotonic() < deadline, "not resubscribed"
        await asyncio.sleep(0.01)
    await redis.publish(channel, orjson.dumps({"type": "update", "driver_id": d, "seq": 7}))
    assert (await asyncio.wait_for(box.get(), 10))["seq"] == 7


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def push_server(app):
    """The session's app on a real port, served by the uvicorn WebSocket implementation the benchmark uses."""
    async with serving(app, ws="websockets-sansio") as where:
        yield where


async def test_a_quiet_driver_still_gets_the_customer_a_snapshot_and_two_customers_see_their_own_stop(
        app, push_server, redis, settings, pool, new_driver_id, monkeypatch):
    d = new_driver_id()
    stops = [{"stop_id": f"s-{d}-{k}", "order_id": f"o-{d}-{k}", "lat": 60.17 + 0.01 * k, "lng": 24.94} for k in (1, 2)]
    await eta.write_plan(redis, prefix=settings.redis_prefix, driver_id=d, stops=stops)
    tokens = [await links.issue(pool, order_id=s["order_id"], ttl_s=3600) for s in stops]
    monkeypatch.setattr(tracking_api, "SNAPSHOT_EVERY_S", 0.5)
    async with websockets.connect(f"ws://{push_server}/ws/track/{tokens[0]}") as first, \
            websockets.connect(f"ws://{push_server}/ws/track/{tokens[1]}") as second:
        for ws, s in ((first, stops[0]), (second, stops[1])):
            hello = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["order_id"] == s["order_id"] and hello["status"] == "scheduled"
        # No fix at all: the heartbeat still sends the current state.
        again = orjson.loads(await asyncio.wait_for(first.recv(), 10))
        assert again["order_id"] == stops[0]["order_id"]
        # One driver update, two customers: each sees its own stop's ETA, with the same sent_at.
        await _until(lambda: d in app.state.tracking_fanout.watchers and len(app.state.tracking_fanout.watchers[d]) == 2)
        update = {"type": "update", "driver_id": d, "seq": 1, "ts": time.time(), "lat": 60.171, "lng": 24.941,
                  "sent_at": 123.0,
                  "stops": [{"stop_id": s["stop_id"], "order_id": s["order_id"], "index": i, "status": "pending",
                             "eta_earliest": 1000.0 + i, "eta_latest": 2000.0 + i} for i, s in enumerate(stops)]}
        await redis.publish(live.Keys(settings.redis_prefix).driver(d), orjson.dumps(update))
        for ws, i in ((first, 0), (second, 1)):
            while True:
                m = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if "sent_at" in m:
                    break
            assert m["order_id"] == stops[i]["order_id"] and m["stops_before"] == i
            assert m["eta"] == {"earliest": 1000.0 + i, "latest": 2000.0 + i} and m["sent_at"] == 123.0
            assert m["position"]["exact"] is (i < settings.tracking_exact_within_stops)


async def test_publish_many_delivers_each_message_whole_to_its_own_channel(redis, tsettings, new_driver_id):
    state = live.LiveState(redis, tsettings.redis_prefix)
    keys = live.Keys(tsettings.redis_prefix)
    a, b = new_driver_id(), new_driver_id()
    ps = redis.pubsub()
    await ps.subscribe(keys.driver(a), keys.driver(b))
    msgs = [(keys.driver(a), orjson.dumps({"name": "Bäckerei Müller", "n": 1})), (keys.driver(b), b""),
            (keys.driver(a), '{"quote": "\\"x\\""}')]
    await state.publish_many(msgs)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 3:
        assert time.monotonic() < deadline, got
        m = await ps.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if m is not None:
            got.append((m["channel"].decode(), m["data"]))
    await ps.aclose()
    assert got == [(keys.driver(a), msgs[0][1]), (keys.driver(b), b""), (keys.driver(a), b'{"quote": "\\"x\\""}')]
