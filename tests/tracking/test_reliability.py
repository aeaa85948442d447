"""Crash and restart: kill -9 an ingest replica repeatedly mid-run; restart Redis mid-run.

No accepted fix (PUBACKed by the broker) may be lost, none stored twice; live state must come
back from history after Redis loses its data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import orjson
import paho.mqtt.client as paho
import pytest
import redis.asyncio as aioredis

from core import mqtt
from serena import broker
from tests.tracking.conftest import free_port, inbound, ping
from tracking.ingest import Pipeline, default_stages

PW = "driver-secret"
pytestmark = pytest.mark.slow


def _env(s) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENA_")}
    env.update({
        "SERENA_ENV": "test", "SERENA_DATABASE_URL": s.database_url, "SERENA_REDIS_URL": s.redis_url,
        "SERENA_REDIS_PREFIX": s.redis_prefix, "SERENA_MQTT_URL": s.mqtt_url, "SERENA_MQTT_TOPIC_ROOT": s.mqtt_topic_root,
        "SERENA_TRACKING_BATCH_WAIT_MS": "5", "SERENA_LOG_LEVEL": "WARNING",
    })
    return env


def _spawn(s, replica: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "serena.cli", "ingest", "run", "--replica", replica, "--connections", "1"],
                            env=_env(s), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_connected(s, client_ids, timeout_s: float = 60.0) -> None:
    """Until the broker log shows every ingest client connected (then a moment for its SUBSCRIBE)."""
    log = s.mosquitto_dir / "mosquitto.log"
    deadline = time.monotonic() + timeout_s
    while not all(f" as {c} " in log.read_text() for c in client_ids):
        assert time.monotonic() < deadline, "ingest replicas did not connect"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)


def _publish(s, driver_ids, per_driver: int, acked: list, done: threading.Event) -> None:
    """Each driver publishes `per_driver` pings at QoS 1; a ping counts as accepted once PUBACKed."""
    ep = mqtt.parse_mqtt_url(s.mqtt_url)
    clients = []
    reasons: dict[tuple[int, int], int] = {}  # (driver, mid) -> PUBACK reason code

    def on_publish(client, userdata, mid, rc, props):
        reasons[(userdata, mid)] = rc.value

    for d in driver_ids:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"drv-{d}", protocol=paho.MQTTv5, userdata=d)
        c.on_publish = on_publish
        c.username_pw_set(mqtt.driver_username(d), PW)
        c.connect(ep.host, ep.port)
        c.loop_start()
        clients.append(c)
    t0 = time.time() - per_driver
    for i in range(per_driver):
        infos = []
        for c, d in zip(clients, driver_ids, strict=True):
            p = ping(d, i, ts=t0 + i, lat=60.17 + i * 1e-5)
            infos.append(((d, i), c.publish(mqtt.driver_topic(d, "location", root=s.mqtt_topic_root), orjson.dumps(p), qos=1)))
        for key, info in infos:
            info.wait_for_publish(10)
            # Accepted = PUBACK reason 0. (16, "no matching subscribers", would mean the broker dropped it.)
            if info.is_published() and reasons.get((key[0], info.mid)) == 0:
                acked.append(key)
        time.sleep(0.004)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    done.set()


async def test_kill_9_of_an_ingest_replica_loses_no_accepted_fix_and_stores_none_twice(start_broker, pool, new_driver_id):
    drivers = [new_driver_id() for _ in range(4)]
    s = start_broker([(d, broker.hash_mqtt_password(PW)) for d in drivers])
    procs = {name: _spawn(s, name) for name in ("k0", "k1")}
    acked: list = []
    done = threading.Event()
    kills = 0
    try:
        await _wait_connected(s, [f"ingest-{name}-0" for name in procs])
        threading.Thread(target=_publish, args=(s, drivers, 600, acked, done), daemon=True).start()
        victim = 0
        while not done.is_set():
            await asyncio.sleep(1.5)
            name = ("k0", "k1")[victim % 2]
            procs[name].send_signal(signal.SIGKILL)
            procs[name].wait()
            kills += 1
            procs[name] = _spawn(s, name)  # the supervisor's restart: same replica name, same broker sessions
            victim += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            n = await pool.fetchval("SELECT count(*) FROM tracking_positions WHERE driver_id = ANY($1)", drivers)
            if n >= len(acked):
                break
            await asyncio.sleep(0.2)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    assert kills >= 2 and len(acked) == 4 * 600
    rows = await pool.fetch("SELECT driver_id, seq FROM tracking_positions WHERE driver_id = ANY($1)", drivers)
    stored = [(r["driver_id"], r["seq"]) for r in rows]
    assert len(stored) == len(set(stored))  # no fix twice
    assert set(acked) <= set(stored)  # every fix the broker accepted is in history


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test on a free port (the machine's Redis is never restarted)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    procs = []

    def start():
        p = subprocess.Popen([exe, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return p
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    start()
    yield f"redis://127.0.0.1:{port}/0", start, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


async def test_after_a_redis_restart_live_state_rebuilds_from_stored_positions(own_redis, tsettings, pool, new_driver_id):
    url, start, procs = own_redis
    s = tsettings.model_copy(update={"redis_url": url})
    r = aioredis.from_url(url)
    pipe = Pipeline(settings=s, pool=pool, redis=r, stages=default_stages(settings=s, pool=pool, redis=r))
    a, b = new_driver_id(), new_driver_id()
    t = time.time()
    await pipe.live.ensure(pool)
    await pipe.process([inbound(ping(a, 1, ts=t - 10)), inbound(ping(b, 1, ts=t - 10))])
    assert set(await pipe.live.get([a, b])) == {a, b}

    procs[-1].send_signal(signal.SIGKILL)  # Redis dies and comes back empty
    procs[-1].wait()
    # While Redis is down, fixes are still stored (live state is derived; history is the record).
    res = await pipe.process([inbound(ping(a, 2, ts=t - 5, lat=60.1701))])
    assert [f.seq for f in res.accepted] == [2]
    start()
    # The first batch after the restart writes b... and sees the marker gone: a rebuild follows.
    await pipe.process([inbound(ping(b, 2, ts=t - 4, lat=60.1702))])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = await pipe.live.get([a, b])
        if set(got) == {a, b}:
            break
        await asyncio.sleep(0.05)
    assert got[a]["seq"] == 2 and got[b]["seq"] == 2  # a from history, b from the newer fix (not clobbered)
    await r.aclose()
