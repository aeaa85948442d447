"""MQTT ingestion through our Mosquitto: per-driver credentials, a shared subscription split across replicas, ack after storage."""

from __future__ import annotations

import asyncio
import time

import orjson
import paho.mqtt.client as paho

from core import mqtt
from serena import broker
from tests.tracking.conftest import ping
from tracking.ingest import MqttSource, Pipeline, run_mqtt

PW = "driver-secret"


def _driver_client(s, driver_id: int) -> paho.Client:
    ep = mqtt.parse_mqtt_url(s.mqtt_url)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"drv-{driver_id}", protocol=paho.MQTTv5)
    c.username_pw_set(mqtt.driver_username(driver_id), PW)
    c.connect(ep.host, ep.port)
    c.loop_start()
    return c


async def _wait_rows(pool, driver_ids, n, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        got = await pool.fetchval("SELECT count(*) FROM tracking_positions WHERE driver_id = ANY($1)", driver_ids)
        if got >= n or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def test_pings_over_mqtt_are_split_between_replicas_and_stored_once(start_broker, pool, redis, new_driver_id):
    a, b = new_driver_id(), new_driver_id()
    s = start_broker([(a, broker.hash_mqtt_password(PW)), (b, broker.hash_mqtt_password(PW))])
    replicas = []
    stop = asyncio.Event()
    for name in ("r0", "r1"):
        src = MqttSource(s, replica=name, connections=1)
        src.start()
        await src.wait_subscribed()
        pipe = Pipeline(settings=s, pool=pool, redis=redis)
        replicas.append((src, pipe, asyncio.create_task(run_mqtt(pipe, src, stop=stop))))
    counted = {name: 0 for name in ("r0", "r1")}
    orig = [src.ack for src, _, _ in replicas]
    for (src, _, _), name, ack in zip(replicas, counted, orig, strict=True):
        def counting(msgs, ack=ack, name=name):
            counted[name] += len(msgs)
            ack(msgs)
        src.ack = counting
    n = 200
    clients = [_driver_client(s, d) for d in (a, b)]
    try:
        t = time.time() - n
        infos = []
        for i in range(n):
            for c, d in zip(clients, (a, b), strict=True):
                infos.append(c.publish(mqtt.driver_topic(d, "location", root=s.mqtt_topic_root),
                                       orjson.dumps(ping(d, i, ts=t + i, lat=60.17 + i * 1e-5)), qos=1))
        for info in infos:
            info.wait_for_publish(10)
        # A driver cannot publish as another: the broker refuses (and nothing is stored for b from a).
        forged = clients[0].publish(mqtt.driver_topic(b, "location", root=s.mqtt_topic_root),
                                    orjson.dumps(ping(b, 10_000)), qos=1)
        forged.wait_for_publish(10)
        assert await _wait_rows(pool, [a, b], 2 * n) == 2 * n
    finally:
        stop.set()
        for c in clients:
            c.disconnect()
            c.loop_stop()
        for src, _, task in replicas:
            await asyncio.wait_for(task, 5)
            src.stop()
    rows = await pool.fetch("SELECT driver_id, seq FROM tracking_positions WHERE driver_id = ANY($1)", [a, b])
    assert sorted((r["driver_id"], r["seq"]) for r in rows) == sorted((d, i) for d in (a, b) for i in range(n))
    assert counted["r0"] > 0 and counted["r1"] > 0 and counted["r0"] + counted["r1"] == 2 * n  # the group split the load


async def test_a_batch_that_fails_to_store_is_not_acknowledged_and_arrives_again(start_broker, pool, redis, new_driver_id):
    d = new_driver_id()
    s = start_broker([(d, broker.hash_mqtt_password(PW))])
    src = MqttSource(s, replica="flaky", connections=1)
    src.start()
    await src.wait_subscribed()
    pipe = Pipeline(settings=s, pool=pool, redis=redis)
    # The first attempt to store fails as if PostgreSQL were unreachable; nothing may be acked or lost.
    real = pipe.process
    failures = []

    async def flaky(batch):
        if not failures:
            failures.append(len(batch))
            raise OSError("database unreachable")
        return await real(batch)

    pipe.process = flaky
    stop = asyncio.Event()
    task = asyncio.create_task(run_mqtt(pipe, src, stop=stop))
    c = _driver_client(s, d)
    try:
        for i in range(20):
            c.publish(mqtt.driver_topic(d, "location", root=s.mqtt_topic_root), orjson.dumps(ping(d, i)), qos=1).wait_for_publish(5)
        assert await _wait_rows(pool, [d], 20) == 20
    finally:
        stop.set()
        c.disconnect()
        c.loop_stop()
        await asyncio.wait_for(task, 5)
        src.stop()
    assert failures and failures[0] >= 1


async def test_a_batch_waits_for_more_only_until_its_oldest_message_has_waited_batch_wait(tsettings, monkeypatch):
    from tracking import ingest

    src = MqttSource(tsettings, replica="unit", connections=1)  # not started: messages are queued by hand
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(s):
        slept.append(s)
        await real_sleep(0)

    monkeypatch.setattr(ingest.asyncio, "sleep", sleep)
    # Messages that queued up while the previous batch was stored (older than the wait) go at once.
    old = time.time() - 1.0
    src.queue.extend(ingest._Msg(0, 1, i, 1, "t", b"{}", old + i * 1e-3) for i in range(5))
    assert [m.mid for m in await src.next_batch(100, 0.5)] == [0, 1, 2, 3, 4] and slept == []
    # max_items still bounds a batch; the rest stays queued in order.
    src.queue.extend(ingest._Msg(0, 1, i, 1, "t", b"{}", old) for i in range(5, 10))
    assert [m.mid for m in await src.next_batch(3, 0.5)] == [5, 6, 7] and slept == []
    assert [m.mid for m in await src.next_batch(3, 0.5)] == [8, 9]
    # A fresh message waits (in short sleeps) for company.
    src.queue.append(ingest._Msg(0, 1, 10, 1, "t", b"{}", time.time()))
    assert [m.mid for m in await src.next_batch(100, 0.05)] == [10] and slept
