"""GPS ingest benchmark on real Mosquitto (our config), Redis and PostGIS.

One run measures, on the same broker and the same offered load:

1. raw baseline — subscribers on the shared subscription that do nothing with a message
   (PUBACK on receipt), as many processes and connections as the ingest run uses: what the MQTT
   client library and broker deliver on this machine; the client is the one ingest reads with
   (`tracking.mqttwire`; `--raw-client paho` for paho-mqtt's threaded client, ingest's before);
2. full pipeline — `serena ingest run` replicas (validate → match* → ETA/stop events →
   PostGIS COPY → Redis live → customer push), acknowledging after the commit;
   latency publish → stored is taken from the fleet feed, which ingest publishes right
   after each batch's commit (the fix carries the publisher's `sent_at`);
3. customer push — an API server with N customer WebSockets on /ws/track/{token} while
   publishers offer a fixed rate; latency publish → customer's WebSocket.

Lost = fixes the broker PUBACKed with reason 0 that are not in history; duplicated =
history rows minus distinct (driver, seq) (the key makes it 0) — re-deliveries the key
absorbed are reported separately. Publishers use the service account on the drivers'
topics (per-driver broker logins would only add connection count, not message work).

    python benchmarks/ingest.py                # defaults; prints a table
    python benchmarks/ingest.py --json         # one JSON object
    python benchmarks/ingest.py --messages 200000 --replicas 2 --watchers 10000 --customer-rate 5000

(*) map matching runs only when SERENA_TRACKING_GRAPH is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import psycopg2  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from core import migrate, mqtt  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from serena import broker  # noqa: E402

BASE_LAT, BASE_LNG = 60.17, 24.94
PACE_S = 0.005  # publishers' pacing granularity


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q / 100 * len(v)))]


# --- publishers (separate processes) --------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _str(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readexactly(1))[0]
    mult, length = 1, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length += (b & 127) * mult
        mult *= 128
        if not b & 128:
            break
    return head, await reader.readexactly(length)


async def _raw_publish(s: Settings, drivers: list[int], n: int, rate: float, seq0: int, t_start: float, conns: int) -> dict:
    """A minimal MQTT v5 QoS 1 publisher on asyncio streams (paho's publisher thread tops out near 3-4k/s here).

    It keeps at most the broker's Receive Maximum unacknowledged per connection, as the spec requires.
    """
    ep = mqtt.parse_mqtt_url(s.mqtt_url)
    acks = {"ok": 0, "bad": 0}
    root = s.mqtt_topic_root
    nd = len(drivers)
    per_conn = [range(i, n, conns) for i in range(conns)]

    async def one(idx: int, items: range) -> None:
        reader, writer = await asyncio.open_connection(ep.host, ep.port)
        cid = f"bench-pub-{uuid.uuid4().hex[:10]}".encode()
        body = _str(b"MQTT") + bytes([5, 0xC2]) + (60).to_bytes(2, "big") + b"\x00" + _str(cid) \
            + _str(s.mqtt_service_username.encode()) + _str(s.mqtt_service_password.encode())
        writer.write(b"\x10" + _varint(len(body)) + body)
        head, connack = await _read_packet(reader)
        assert head >> 4 == 2 and connack[1] == 0, f"CONNACK refused: {connack[1]}"
        window = 20  # MQTT v5 default Receive Maximum is 65535; Mosquitto advertises max_inflight_messages
        props = connack[2:]
        i = 1 + (1 if props and props[0] < 128 else 2)
        while i < len(props):
            pid = props[i]
            if pid == 0x21:
                window = int.from_bytes(props[i + 1:i + 3], "big")
                break
            i += 1 + {0x11: 4, 0x12: None, 0x13: 2, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}.get(pid, 0) \
                if pid != 0x12 else 3 + int.from_bytes(props[i + 1:i + 3], "big")
        sem = asyncio.Semaphore(window)
        expected = len(items)
        got = [0]
        finished = asyncio.Event()

        async def read_acks():
            # Whatever arrived at once, parsed from one buffer (a read per PUBACK cost the load generator more
            # CPU than the acknowledgements are worth; it shares the 2 cores with what it measures).
            buf = bytearray()
            while got[0] < expected:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("broker closed the publisher connection")
                buf += data
                pos = 0
                while pos + 2 <= len(buf):
                    head, length, k, mult = buf[pos], 0, pos + 1, 1
                    while k < len(buf):
                        b = buf[k]
                        length += (b & 127) * mult
                        mult *= 128
                        k += 1
                        if not b & 128:
                            break
                    else:
                        break
                    if k + length > len(buf):
                        break
                    if head >> 4 == 4:  # PUBACK
                        rc = buf[k + 2] if length >= 3 else 0
                        acks["ok" if rc == 0 else "bad"] += 1
                        got[0] += 1
                        sem.release()
                    pos = k + length
                del buf[:pos]
            finished.set()

        rt = asyncio.create_task(read_acks())
        t0 = time.time()
        pid = 0
        for k, i in enumerate(items):
            if rate:
                # Paced to the offered rate, a few ms at a time (a sleep per message cost the load generator
                # more than the publish): a message may go out up to PACE_S early, never late.
                lag = t0 + k / (rate / conns) - time.time()
                if lag > PACE_S:
                    await asyncio.sleep(lag)
            await sem.acquire()
            d = i % nd
            seq = seq0 + i // nd
            now = time.time()
            payload = orjson.dumps({"seq": seq, "ts": now, "lat": BASE_LAT + (drivers[d] % 100) * 1e-3 + (seq % 100000) * 1e-7,
                                    "lng": BASE_LNG + (drivers[d] // 100 % 100) * 1e-3, "accuracy_m": 5.0, "speed_mps": 8.0,
                                    "heading_deg": 90.0, "sent_at": now})
            pid = pid % 65535 + 1
            var = _str(f"{root}/drivers/{drivers[d]}/location".encode()) + pid.to_bytes(2, "big") + b"\x00"
            writer.write(b"\x32" + _varint(len(var) + len(payload)) + var + payload)
            if k % 64 == 0:
                await writer.drain()
        await writer.drain()
        await asyncio.wait_for(finished.wait(), 300)
        rt.cancel()
        writer.write(b"\xe0\x00")
        writer.close()

    while time.time() < t_start:
        await asyncio.sleep(0.001)
    t0 = time.time()
    await asyncio.gather(*(one(i, items) for i, items in enumerate(per_conn)))
    return {"ok": acks["ok"], "bad": acks["bad"], "t0": t0, "t_sent": time.time(), "cpu_s": time.process_time()}


def publisher(s: Settings, drivers: list[int], n: int, rate: float, seq0: int, t_start: float, out: mp.Queue) -> None:
    """Publish n pings round-robin over `drivers` at QoS 1 (rate 0 = as fast as the broker acknowledges)."""
    out.put(asyncio.run(_raw_publish(s, drivers, n, rate, seq0, t_start, conns=8)))


def run_publishers(s: Settings, drivers: list[int], n: int, procs: int, rate: float, seq0: int) -> dict:
    q: mp.Queue = mp.Queue()
    t_start = time.time() + 1.0
    per = [drivers[i::procs] for i in range(procs)]
    ps = [mp.Process(target=publisher, args=(s, per[i], n // procs, rate / procs if rate else 0, seq0, t_start, q))
          for i in range(procs)]
    for p in ps:
        p.start()
    res = [q.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    return {"ok": sum(r["ok"] for r in res), "bad": sum(r["bad"] for r in res), "t0": min(r["t0"] for r in res),
            "t_sent": max(r["t_sent"] for r in res), "cpu_s": sum(r["cpu_s"] for r in res)}


# --- raw baseline subscriber -------------------------------------------------------------------------


def raw_subscriber(s: Settings, expect: int, out: mp.Queue, ready: mp.Event, idx: int, connections: int = 1) -> None:
    """`connections` paho clients on the shared subscription (as many as an ingest process uses), doing nothing."""
    ep = mqtt.parse_mqtt_url(s.mqtt_url)
    st = {"n": 0, "first": None, "last": None}
    lock = threading.Lock()
    subs = [threading.Event() for _ in range(connections)]

    def on_message(client, userdata, msg):
        t = time.time()
        with lock:
            st["n"] += 1
            if st["first"] is None:
                st["first"] = t
            st["last"] = t

    clients = []
    for j in range(connections):
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{idx}-{j}", protocol=paho.MQTTv5)
        c.username_pw_set(s.mqtt_service_username, s.mqtt_service_password)
        c.on_message = on_message
        c.on_subscribe = (lambda e: (lambda *a: e.set()))(subs[j])
        c.connect(ep.host, ep.port)
        c.subscribe(mqtt.shared("rawbench", mqtt.drivers_filter("location", root=s.mqtt_topic_root)), qos=1)
        c.loop_start()
        clients.append(c)
    for e in subs:
        e.wait(10)
    ready.set()
    idle_since = time.time()
    last_n = 0
    while True:
        time.sleep(0.2)
        if st["n"] != last_n:
            last_n, idle_since = st["n"], time.time()
        elif time.time() - idle_since > 3.0 and st["n"] > 0:
            break
        elif time.time() - idle_since > 120:
            break
    for c in clients:
        c.disconnect()
        c.loop_stop()
    out.put(st)


def raw_subscriber_wire(s: Settings, expect: int, out: mp.Queue, ready: mp.Event, idx: int, connections: int = 1) -> None:
    """`connections` subscribers of tracking.mqttwire (the client ingest reads with) that PUBACK each message on receipt."""
    from tracking import mqttwire

    async def main():
        ep = mqtt.parse_mqtt_url(s.mqtt_url)
        st = {"n": 0, "first": None, "last": None}
        subs: list = []

        def on_publish(i):
            def cb(gen, mid, qos, topic, payload, received_at):
                st["n"] += 1
                if st["first"] is None:
                    st["first"] = received_at
                st["last"] = received_at
                if qos:
                    subs[i].ack(gen, (mid,))
            return cb

        for j in range(connections):
            subs.append(mqttwire.Subscriber(
                host=ep.host, port=ep.port, tls=ep.tls, client_id=f"bench-rawwire-{idx}-{j}",
                username=s.mqtt_service_username, password=s.mqtt_service_password,
                topic_filter=mqtt.shared("rawbench", mqtt.drivers_filter("location", root=s.mqtt_topic_root)),
                on_publish=on_publish(j), session_expiry_s=0))
            subs[-1].start()
        await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in subs)), 10)
        ready.set()
        idle_since, last_n = time.time(), 0
        while True:
            await asyncio.sleep(0.2)
            if st["n"] != last_n:
                last_n, idle_since = st["n"], time.time()
            elif time.time() - idle_since > (3.0 if st["n"] else 120):
                break
        for c in subs:
            c.stop()
        out.put(st)

    asyncio.run(main())


def raw_baseline(s: Settings, drivers: list[int], n: int, pubs: int, subs: int, connections: int = 1,
                 client: str = "ingest") -> dict:
    """`client`: "ingest" = the MQTT client ingest uses (tracking.mqttwire), "paho" = paho-mqtt's threaded client."""
    q: mp.Queue = mp.Queue()
    evs = [mp.Event() for _ in range(subs)]
    target = raw_subscriber_wire if client == "ingest" else raw_subscriber
    ps = [mp.Process(target=target, args=(s, n, q, evs[i], i, connections)) for i in range(subs)]
    for p in ps:
        p.start()
    for e in evs:
        e.wait(30)
    pub = run_publishers(s, drivers, n, pubs, 0, seq0=0)
    res = [q.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    received = sum(r["n"] for r in res)
    last = max(r["last"] or 0 for r in res)
    return {"published_ok": pub["ok"], "received": received, "seconds": last - pub["t0"],
            "msgs_per_s": received / max(1e-9, last - pub["t0"])}


# --- full pipeline -----------------------------------------------------------------------------------


# Loaded by the API and ingest processes (PYTHONPATH): the wall time each spends in the cyclic
# garbage collector, per generation, written to GC_DIR/gc-{pid}.json every second. A full
# collection stops the whole process, so it shows up directly in publish → customer p99.
_GC_SITE = """
import gc, json, os, threading, time
_st = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
_t = [0.0, 0, 0.0]
def _cb(phase, info):
    if phase == "start":
        _t[0], _t[1], _t[2] = time.perf_counter(), info["generation"], time.thread_time()
    else:
        s = _st[_t[1]]
        s[0] += 1
        s[1] += time.perf_counter() - _t[0]
def _dump():
    path = os.path.join(os.environ["BENCH_GC_DIR"], f"gc-{os.getpid()}.json")
    while True:
        time.sleep(1.0)
        with open(path + ".tmp", "w") as f:
            json.dump({"t": time.time(), "gen": _st, "max_s": _mx[0], "long": _long,
                       "garbage": sorted(_garbage.items(), key=lambda kv: -kv[1])[:40], "young": _young}, f)
        os.replace(path + ".tmp", path)
_mx = [0.0]
_long = []  # (epoch s, generation, seconds, objects collected, CPU seconds) of every collection of 5 ms or more
def _cb2(phase, info):
    if phase == "stop":
        d = time.perf_counter() - _t[0]
        _mx[0] = max(_mx[0], d)
        if d >= 0.005 and len(_long) < 10000:
            _long.append((time.time(), _t[1], d, info.get("collected", 0), time.thread_time() - _t[2]))
_garbage = {}  # type name -> objects found unreachable (BENCH_GC_GARBAGE_AFTER_S: what the collector frees, sampled)
_gsample = [0]
_young = []  # (generation, objects in the collected generations, top types) at the start of sampled collections
def _cb3(phase, info):
    if phase == "start" and gc.get_debug() & gc.DEBUG_SAVEALL:
        objs = [o for g in range(info["generation"] + 1) for o in gc.get_objects(g)]
        hist = {}
        for o in objs:
            n = type(o).__qualname__
            hist[n] = hist.get(n, 0) + 1
        _young.append((info["generation"], len(objs), sorted(hist.items(), key=lambda kv: -kv[1])[:15]))
        del objs
    if phase == "stop" and gc.get_debug() & gc.DEBUG_SAVEALL:
        for o in gc.garbage:
            n = type(o).__qualname__
            _garbage[n] = _garbage.get(n, 0) + 1
        gc.garbage.clear()
        _gsample[0] += 1
        if _gsample[0] >= 3:
            gc.set_debug(0)
def _arm():
    time.sleep(float(os.environ["BENCH_GC_GARBAGE_AFTER_S"]))
    gc.set_debug(gc.DEBUG_SAVEALL)
if os.environ.get("BENCH_GC_DIR"):
    gc.callbacks.append(_cb)
    gc.callbacks.append(_cb2)
    threading.Thread(target=_dump, daemon=True).start()
    if os.environ.get("BENCH_GC_GARBAGE_AFTER_S"):
        gc.callbacks.append(_cb3)
        threading.Thread(target=_arm, daemon=True).start()
"""


def gc_stats(s: Settings, pids: list[int]) -> dict:
    """Collections and seconds per generation, summed over `pids`, from the _GC_SITE files."""
    tot = {str(g): [0, 0.0] for g in range(3)}
    mx = 0.0
    long: list = []
    for pid in pids:
        f = Path(s.mosquitto_dir).parent / "gc" / f"gc-{pid}.json"
        with contextlib.suppress(OSError, ValueError):
            d = json.loads(f.read_text())
            for g, (n, sec) in d["gen"].items():
                tot[g][0] += n
                tot[g][1] += sec
            mx = max(mx, d["max_s"])
            long += d.get("long", [])
    return {"gen": tot, "longest_s": mx, "long": long, "t": time.time()}


def gc_delta(a: dict, b: dict) -> dict:
    """Per generation: collections and seconds in the window; the collections of 5 ms or more in it (ms, by generation)."""
    long = sorted((x[1], round(x[2] * 1000, 1), x[3], round(x[4] * 1000, 1)) for x in b["long"] if a["t"] <= x[0] <= b["t"])
    return {f"gen{g}": {"collections": b["gen"][g][0] - a["gen"][g][0], "seconds": round(b["gen"][g][1] - a["gen"][g][1], 2)}
            for g in b["gen"]} | {"longest_pause_s_since_start": round(b["longest_s"], 3),
                                  "pauses_5ms_plus_ms": {f"gen{g}": [d for gg, d, _, _ in long if gg == g] for g in range(3)},
                                  "pauses_5ms_plus_cpu_ms": {f"gen{g}": [c for gg, _, _, c in long if gg == g] for g in range(3)},
                                  "pauses_5ms_plus_collected": {f"gen{g}": [c for gg, _, c, _ in long if gg == g] for g in range(3)}}


def env_of(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERENA_") or k == "SERENA_GC_THRESHOLDS"}
    gc_dir = Path(s.mosquitto_dir).parent / "gc"
    gc_dir.mkdir(parents=True, exist_ok=True)
    (gc_dir / "sitecustomize.py").write_text(_GC_SITE)
    env["PYTHONPATH"] = os.pathsep.join([str(gc_dir), *filter(None, [env.get("PYTHONPATH")])])
    env["BENCH_GC_DIR"] = str(gc_dir)
    env.update({
        "SERENA_ENV": "test", "SERENA_DATABASE_URL": s.database_url, "SERENA_REDIS_URL": s.redis_url,
        "SERENA_REDIS_PREFIX": s.redis_prefix, "SERENA_MQTT_URL": s.mqtt_url, "SERENA_MQTT_TOPIC_ROOT": s.mqtt_topic_root,
        "SERENA_LOG_LEVEL": "WARNING", "SERENA_TRACKING_BATCH_MAX": str(s.tracking_batch_max),
        "SERENA_TRACKING_BATCH_WAIT_MS": str(s.tracking_batch_wait_ms),
        "SERENA_TRACKING_MQTT_CONNECTIONS": str(s.tracking_mqtt_connections),
    })
    return env


def start_ingest(s: Settings, replicas: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-m", "serena.cli", "ingest", "run", "--replica", f"b{i}"], env=env_of(s),
                              stdout=subprocess.DEVNULL, stderr=open(Path(s.mosquitto_dir) / f"ingest-{i}.err", "w"))  # noqa: SIM115
             for i in range(replicas)]
    log = Path(s.mosquitto_dir) / "mosquitto.log"
    ids = [f"{s.tracking_share_group}-b{i}-{j}" for i in range(replicas) for j in range(s.tracking_mqtt_connections)]
    deadline = time.time() + 90
    while not all(f" as {c} " in log.read_text() for c in ids):
        if time.time() > deadline:
            raise RuntimeError("ingest replicas did not connect; see ingest-*.err in " + str(s.mosquitto_dir))
        time.sleep(0.2)
    time.sleep(1.0)
    return procs


def stop_procs(procs: list[subprocess.Popen], timeout_s: float = 15.0) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()


async def observe_stored(s: Settings, stop: asyncio.Event, lat: list[float], seen: list[int], drivers: set[int] | None = None) -> None:
    """Latency publish → stored, from the fleet feed ingest publishes right after each commit."""
    r = aioredis.from_url(s.redis_url)
    ps = r.pubsub()
    await ps.subscribe(s.redis_prefix + "tracking:fleet")
    while not stop.is_set():
        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg is None:
            continue
        t = time.time()
        for f in orjson.loads(msg["data"]):
            seen[0] += 1
            if "sent_at" in f:
                lat.append(t - f["sent_at"])
    await ps.aclose()
    await r.aclose()


async def count_rows(dsn: str, drivers: list[int], seq_min: int) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        total, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (driver_id, seq)) FROM tracking_positions WHERE driver_id = ANY($1) AND seq >= $2",
            drivers, seq_min)
        dups = await conn.fetchval("SELECT count(*) FROM tracking_rejects WHERE driver_id = ANY($1) AND reason = 'duplicate'"
                                   " AND seq >= $2", drivers, seq_min)
        return total, distinct, dups
    finally:
        await conn.close()


async def full_pipeline(s: Settings, drivers: list[int], n: int, pubs: int, seq0: int) -> dict:
    stop = asyncio.Event()
    lat: list[float] = []
    seen = [0]
    obs = asyncio.create_task(observe_stored(s, stop, lat, seen))
    await asyncio.sleep(0.3)
    pub = await asyncio.to_thread(run_publishers, s, drivers, n, pubs, 0, seq0)
    # Drain: wait until history holds every acknowledged fix (or it stops growing).
    last, still = -1, time.time()
    while True:
        total, distinct, dups = await count_rows(s.asyncpg_dsn, drivers, seq0)
        if distinct >= pub["ok"]:
            break
        if distinct != last:
            last, still = distinct, time.time()
        elif time.time() - still > 15:
            break
        await asyncio.sleep(0.2)
    t_done = time.time()
    await asyncio.sleep(0.5)
    stop.set()
    await obs
    # Throughput: stored rows over the time from first publish to the last commit seen.
    return {"published_ok": pub["ok"], "refused_by_broker": pub["bad"], "stored": distinct, "rows": total,
            "lost": pub["ok"] - distinct, "duplicated_rows": total - distinct, "redeliveries_absorbed": dups,
            "seconds": t_done - pub["t0"], "pings_per_s": distinct / max(1e-9, t_done - pub["t0"]),
            "publish_to_stored_ms": {"p50": _ms(pct(lat, 50)), "p99": _ms(pct(lat, 99)), "samples": len(lat)}}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


# --- customer push -------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds per process kind over a window (psutil), so a figure says where the 2 cores went.

    Kinds are functions returning processes (looked up at both ends: a process started in the
    window counts from zero). Redis and PostgreSQL are shared with whatever else runs on the
    machine; only our database's backends are counted for PostgreSQL.
    """

    def __init__(self, kinds: dict[str, callable]) -> None:
        self.kinds = kinds

    def _sample(self) -> dict[tuple[str, int], float]:
        import psutil

        out: dict[tuple[str, int], float] = {}
        for kind, fn in self.kinds.items():
            for proc in fn():
                try:
                    t = proc.cpu_times()
                    out[(kind, proc.pid)] = t.user + t.system
                except psutil.Error:
                    pass
        return out

    def start(self) -> None:
        import psutil

        self.t0, self.s0, self.sys0 = time.monotonic(), self._sample(), psutil.cpu_times()

    def stop(self, extra_cpu_s: dict[str, float] | None = None) -> dict:
        import psutil

        s1, sys1, dt = self._sample(), psutil.cpu_times(), time.monotonic() - self.t0
        per: dict[str, float] = {k: 0.0 for k in self.kinds}
        for (kind, pid), v in s1.items():
            per[kind] += v - self.s0.get((kind, pid), 0.0)
        per.update(extra_cpu_s or {})
        busy = sum(getattr(sys1, f) - getattr(self.sys0, f) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        cores = {k: round(v / dt, 2) for k, v in per.items()}
        cores["other (rest of the machine)"] = round(busy / dt - sum(per.values()) / dt, 2)
        return {"seconds": round(dt, 1), "cores": cores, "machine_busy_cores": round(busy / dt, 2)}


def _procs(pids):
    import psutil

    out = []
    for pid in pids():
        try:
            pr = psutil.Process(pid)
            out += [pr, *pr.children(recursive=True)]
        except psutil.Error:
            pass
    return out


def _thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds of the ingest processes' event-loop threads and of their other threads (paho MQTT before tracking.mqttwire)."""
    import psutil

    out = {"event loop": 0.0, "other threads": 0.0}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for t in psutil.Process(pid).threads():
                out["event loop" if t.id == pid else "other threads"] += t.user_time + t.system_time
    return out


def _named(name: str, needle: str = ""):
    import psutil

    def fn():
        out = []
        for pr in psutil.process_iter(["name", "cmdline"]):
            if pr.info["name"] == name and needle in " ".join(pr.info["cmdline"] or ()):
                out.append(pr)
        return out
    return fn


def watcher_proc(url_base: str, tokens: list[str], out: mp.Queue, ready: mp.Event, stop: mp.Event) -> None:
    """Customer sockets with the `websockets` client (a full client: per-message deflate, parses each message)."""
    import websockets

    async def main():
        lat: list[float] = []
        conns = []
        failed = 0
        why: dict[str, int] = {}

        async def one(tok):
            nonlocal failed
            try:
                ws = await websockets.connect(f"{url_base}/ws/track/{tok}", open_timeout=600, max_queue=64)
            except Exception as exc:  # noqa: BLE001
                failed += 1
                key = f"{type(exc).__name__}: {str(exc)[:80]}"
                why[key] = why.get(key, 0) + 1
                return
            conns.append(ws)
            try:
                async for raw in ws:
                    m = orjson.loads(raw)
                    if "sent_at" in m:
                        lat.append(time.time() - m["sent_at"])
            except Exception:  # noqa: BLE001
                pass

        tasks = []
        for i in range(0, len(tokens), 200):
            tasks += [asyncio.create_task(one(t)) for t in tokens[i:i + 200]]
            await asyncio.sleep(0.05)
        while len(conns) + failed < len(tokens):
            await asyncio.sleep(0.1)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        # Report first, then drop the sockets with the process: 5,000 closing handshakes on a busy
        # machine take minutes and measure nothing.
        out.put({"lat": lat, "connected": len(conns), "failed": failed, "why": why, "messages": len(lat)})
        out.close()
        out.join_thread()
        os._exit(0)

    asyncio.run(main())


_SENT_AT = b'"sent_at":'


class _RawWs(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455) for the load generator: no compression, no JSON parsing.

    It reads only what the benchmark needs, the `sent_at` number of each text frame, so that
    10,000 sockets at 10,000 messages/s cost the load generator little CPU and its own queueing
    does not show up as server latency. It answers pings (uvicorn closes sockets that do not)
    and close frames.
    """

    def __init__(self, host: str, path: str, state: dict) -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {__import__('base64').b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.state = state
        self.buf = bytearray()
        self.open = False
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(f"closed before the handshake: {exc}")
        self.state["lost"] += self.open

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:buf.find(b"\r\n")])
            if b" 101 " not in status:
                self.done.set_result(status.decode(errors="replace")[:80])
                self.transport.close()
                return
            del buf[:end + 4]
            self.open = True
            self.done.set_result(None)
        now = time.time()
        lat, st = self.state["lat"], self.state
        i, n = 0, len(buf)
        while n - i >= 2:
            op, ln, hdr = buf[i] & 0x0F, buf[i + 1] & 0x7F, 2
            if ln == 126:
                if n - i < 4:
                    break
                ln, hdr = int.from_bytes(buf[i + 2:i + 4], "big"), 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln, hdr = int.from_bytes(buf[i + 2:i + 10], "big"), 10
            if n - i < hdr + ln:
                break
            a, b = i + hdr, i + hdr + ln
            if op == 1 or op == 0 or op == 2:
                st["messages"] += 1
                k = buf.find(_SENT_AT, a, b)
                if k >= 0:
                    k += len(_SENT_AT)
                    e = k
                    while e < b and buf[e] not in (44, 125):  # ',' '}'
                        e += 1
                    lat.append(now - float(buf[k:e]))
            elif op == 9:
                self._send(0xA, bytes(buf[a:b]))
            elif op == 8:
                self._send(0x8, bytes(buf[a:min(b, a + 2)]))
                self.transport.close()
            i = b
        if i:
            del buf[:i]


def raw_watcher_proc(targets: list[tuple[str, str]], out: mp.Queue, ready: mp.Event, stop: mp.Event) -> None:
    """Customer sockets with `_RawWs` (the cheap load generator; see its docstring)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main():
        st = {"lat": [], "messages": 0, "lost": 0}
        failed = 0
        why: dict[str, int] = {}
        conns = []
        loop = asyncio.get_running_loop()

        async def one(url_tok):
            nonlocal failed
            base, tok = url_tok
            h, p = base.removeprefix("ws://").split(":")
            for attempt in range(5):  # a phone retries a refused connect too (a burst can overflow the listen queue)
                try:
                    _, proto = await loop.create_connection(lambda: _RawWs(f"{h}:{p}", f"/ws/track/{tok}", st), h, int(p))
                    err = await asyncio.wait_for(proto.done, 600)
                except Exception as exc:  # noqa: BLE001
                    err = f"{type(exc).__name__}: {str(exc)[:80]}"
                if err is None or not err.startswith(("closed before", "ConnectionResetError", "ConnectionRefused")):
                    break
                await asyncio.sleep(0.5 * (attempt + 1))
            if err is None:
                conns.append(proto)
            else:
                failed += 1
                why[err] = why.get(err, 0) + 1

        pending = []
        for i in range(0, len(targets), 200):
            pending += [asyncio.create_task(one(t)) for t in targets[i:i + 200]]
            await asyncio.sleep(0.05)
        await asyncio.gather(*pending)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        out.put({"lat": st["lat"], "connected": len(conns), "failed": failed, "why": why, "messages": st["messages"],
                 "lost_during_run": st["lost"]})
        out.close()
        out.join_thread()
        os._exit(0)

    asyncio.run(main())


def start_api(s: Settings, port: int, args) -> subprocess.Popen:
    env = env_of(s)
    cmd = [sys.executable, "-m", "uvicorn", "serena.asgi:app", "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--ws", args.ws_impl, "--backlog", "16384", "--loop", "uvloop"]
    if not args.ws_deflate:
        cmd += ["--ws-per-message-deflate", "false"]
    if args.ws_ping_interval is not None:
        cmd += ["--ws-ping-interval", str(args.ws_ping_interval)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(Path(s.mosquitto_dir) / f"api-{port}.err", "w"))  # noqa: SIM115


def start_profilers(out_dir: Path, groups: dict[str, list[int]], seconds: float) -> list[subprocess.Popen]:
    """py-spy (non-blocking sampling) on each process for the publish window; raw collapsed stacks per process."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for kind, pids in groups.items():
        for pid in pids:
            native = ["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else ["--nonblocking"]
            procs.append(subprocess.Popen(["py-spy", "record", *native, "-r", "47", "-d", str(int(seconds)),
                                           "-f", "raw", "-o", str(out_dir / f"{kind}-{pid}.txt"), "-p", str(pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


async def customer_push(s: Settings, drivers: list[int], watchers: int, rate: float, seconds: float, pubs: int, seq0: int,
                        watcher_procs: int, args=None) -> dict:
    from tracking import eta, links

    pool = await asyncpg.create_pool(s.asyncpg_dsn, min_size=1, max_size=8)
    r = aioredis.from_url(s.redis_url)
    per_driver = max(1, watchers // len(drivers))
    tokens = []
    pipe_stops = []
    for d in drivers:
        stops = [{"stop_id": f"st-{d}-{k}", "order_id": f"ord-{d}-{k}", "lat": BASE_LAT + 0.01 * (k + 1), "lng": BASE_LNG}
                 for k in range(per_driver)]
        pipe_stops.append((d, stops))
    for d, stops in pipe_stops:
        await eta.write_plan(r, prefix=s.redis_prefix, driver_id=d, stops=stops)
    sem = asyncio.Semaphore(8)

    async def issue(order):
        async with sem:
            return await links.issue(pool, order_id=order, ttl_s=86400)

    tokens = await asyncio.gather(*(issue(st["order_id"]) for _, stops in pipe_stops for st in stops))
    tokens = tokens[:watchers]
    ports = [free_port() for _ in range(args.api_procs)]
    apis = [start_api(s, port, args) for port in ports]
    try:
        deadline = time.time() + 60
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("API did not start") from None
                    await asyncio.sleep(0.2)
        q: mp.Queue = mp.Queue()
        stop = mp.Event()
        readies = [mp.Event() for _ in range(watcher_procs)]
        # Watchers spread round-robin over the API processes (a load balancer's job in production).
        targets = [(f"ws://127.0.0.1:{ports[i % len(ports)]}", t) for i, t in enumerate(tokens)]
        if args.client == "raw":
            wps = [mp.Process(target=raw_watcher_proc, args=(targets[i::watcher_procs], q, readies[i], stop))
                   for i in range(watcher_procs)]
        else:
            wps = [mp.Process(target=_ws_watcher_entry, args=(targets[i::watcher_procs], q, readies[i], stop))
                   for i in range(watcher_procs)]
        for p in wps:
            p.start()
        for e in readies:
            await asyncio.to_thread(e.wait, 900)
        print(f"customer phase: {len(tokens)} watchers connecting done", file=sys.stderr, flush=True)
        await asyncio.sleep(2.0)  # let the connect burst settle before measuring
        n = int(rate * seconds)
        ostop = asyncio.Event()
        stored_lat: list[float] = []
        obs = asyncio.create_task(observe_stored(s, ostop, stored_lat, [0]))
        ingest_pids = args.ingest_pids
        meter = CpuMeter({
            "ingest": lambda: _procs(lambda: ingest_pids),
            "api": lambda: _procs(lambda: [a.pid for a in apis]),
            "watcher clients": lambda: _procs(lambda: [w.pid for w in wps]),
            "bench main": lambda: _procs(lambda: [os.getpid()])[:1],
            "mosquitto": _named("mosquitto", str(s.mosquitto_dir)),
            "redis": _named("redis-server"),
            "postgres (bench db)": _named("postgres", dsn_name(s.asyncpg_dsn)),
        })
        profilers = start_profilers(Path(args.profile), {"ingest": ingest_pids, "api": [a.pid for a in apis],
                                                          "watchers": [w.pid for w in wps]}, seconds) if args.profile else []
        gc0 = {"api": gc_stats(s, [a.pid for a in apis]), "ingest": gc_stats(s, ingest_pids)}  # written every second
        meter.start()
        threads0 = _thread_cpu(ingest_pids)
        load0 = os.getloadavg()
        pub = await asyncio.to_thread(run_publishers, s, drivers, n, pubs, rate, seq0)
        load1 = os.getloadavg()
        await asyncio.sleep(3.0)
        cpu = meter.stop({"publishers": pub["cpu_s"]})
        threads1 = _thread_cpu(ingest_pids)
        await asyncio.sleep(1.1)
        gc1 = {"api": gc_stats(s, [a.pid for a in apis]), "ingest": gc_stats(s, ingest_pids)}
        cpu["ingest_threads_cores"] = {k: round((threads1[k] - threads0[k]) / cpu["seconds"], 2) for k in threads1}
        for pr in profilers:
            pr.wait()
        ostop.set()
        await obs
        stop.set()
        res = [await asyncio.to_thread(q.get, True, 300) for _ in wps]
        for p in wps:
            p.join(10)
        lat = [x for rr in res for x in rr["lat"]]
        return {"watchers_connected": sum(rr["connected"] for rr in res), "watchers_failed": sum(rr["failed"] for rr in res),
                "watcher_failures": {k: v for rr in res for k, v in rr["why"].items()},
                "api_procs": len(apis), "client": args.client, "ws_deflate": args.ws_deflate,
                "ws_ping_interval_s": args.ws_ping_interval,
                "offered_pings_per_s": rate, "achieved_publish_per_s": round(pub["ok"] / max(1e-9, pub["t_sent"] - pub["t0"])),
                "messages_to_customers": len(lat), "frames_to_customers": sum(rr["messages"] for rr in res),
                "publish_to_stored_ms": {"p50": _ms(pct(stored_lat, 50)), "p99": _ms(pct(stored_lat, 99)),
                                         "samples": len(stored_lat)},
                "publish_to_customer_ms": {"p50": _ms(pct(lat, 50)), "p99": _ms(pct(lat, 99)), "max": _ms(max(lat, default=None))},
                "gc_in_window": {k: gc_delta(gc0[k], gc1[k]) for k in gc0},
                "cpu": cpu, "loadavg_1min": {"before_publish": round(load0[0], 2), "after_publish": round(load1[0], 2)}}
    finally:
        stop_procs(apis, timeout_s=10.0)
        await pool.close()
        await r.aclose()


def _ws_watcher_entry(targets: list[tuple[str, str]], out: mp.Queue, ready: mp.Event, stop: mp.Event) -> None:
    """The websockets-client watcher for targets spread over several API processes."""
    by_base: dict[str, list[str]] = {}
    for base, tok in targets:
        by_base.setdefault(base, []).append(tok)
    if len(by_base) != 1:
        raise SystemExit("--client websockets supports one API process; use --client raw with --api-procs")
    (base, toks), = by_base.items()
    watcher_proc(base, toks, out, ready, stop)


def dsn_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


# --- main ----------------------------------------------------------------------------------------------


def bench_database(base: Settings) -> str:
    """A fresh migrated database for the run (dropped at the end)."""
    admin_dsn = base.asyncpg_dsn.rsplit("/", 1)[0] + "/postgres"
    name = f"serena_bench_ingest_{os.getpid()}"
    c = psycopg2.connect(admin_dsn)
    c.autocommit = True
    c.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
    c.cursor().execute(f'CREATE DATABASE "{name}"')
    c.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    migrate.upgrade(dsn)
    return dsn


def drop_database(dsn: str) -> None:
    admin_dsn = dsn.rsplit("/", 1)[0] + "/postgres"
    c = psycopg2.connect(admin_dsn)
    c.autocommit = True
    c.cursor().execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    c.close()


async def main(args, base: Settings, dsn: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="serena-bench-ingest-"))
    s = base.model_copy(update={
        "env": "test", "database_url": dsn, "mqtt_url": f"mqtt://127.0.0.1:{free_port()}", "mosquitto_dir": tmp / "mq",
        "mqtt_topic_root": f"bench/{uuid.uuid4().hex[:8]}", "redis_prefix": f"serena:bench:{uuid.uuid4().hex[:8]}:",
        "tracking_batch_max": args.batch_max, "tracking_batch_wait_ms": args.batch_wait_ms,
        "tracking_mqtt_connections": args.connections,
    })
    broker.write_broker_files(s, [])
    broker.start_broker(s)
    drivers = list(range(1_000_000, 1_000_000 + args.drivers))
    out: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_1min_at_start": round(os.getloadavg()[0], 1)},
                 "config": {k: getattr(args, k) for k in ("messages", "drivers", "replicas", "connections", "publishers",
                                                         "batch_max", "batch_wait_ms", "watchers", "customer_rate")}}
    ingest = []
    try:
        if args.messages:
            out["raw_baseline"] = await asyncio.to_thread(raw_baseline, s, drivers, args.messages, args.publishers,
                                                          args.replicas, args.connections, args.raw_client)
            out["raw_baseline"]["client"] = args.raw_client
            print("raw baseline:", json.dumps(out["raw_baseline"]), file=sys.stderr, flush=True)
        ingest = start_ingest(s, args.replicas)
        args.ingest_pids = [p.pid for p in ingest]
        if args.messages:
            out["full_pipeline"] = await full_pipeline(s, drivers, args.messages, args.publishers, seq0=1_000_000)
            out["full_over_raw"] = round(out["full_pipeline"]["pings_per_s"] / out["raw_baseline"]["msgs_per_s"], 3)
            print("full pipeline:", json.dumps(out["full_pipeline"]), file=sys.stderr, flush=True)
        if args.watchers:
            # Two customers per driver, as in a real fleet: the offered rate spreads over watchers / 2 drivers.
            cust_drivers = list(range(5_000_000, 5_000_000 + max(1, args.watchers // 2)))
            out["customer_push"] = await customer_push(s, cust_drivers, args.watchers, args.customer_rate,
                                                       args.customer_seconds, args.publishers, seq0=2_000_000,
                                                       watcher_procs=args.watcher_procs, args=args)
    finally:
        stop_procs(ingest)
        broker.stop_broker(s)
        r = aioredis.from_url(s.redis_url)
        async for k in r.scan_iter(match=s.redis_prefix + "*", count=1000):
            await r.delete(k)
        await r.aclose()
    out["machine"]["loadavg_1min_at_end"] = round(os.getloadavg()[0], 1)
    return out


def _print(o: dict) -> None:
    if "raw_baseline" not in o:
        o = {**o, "raw_baseline": {"msgs_per_s": 0, "received": 0, "published_ok": 0},
             "full_pipeline": {"pings_per_s": 0, "lost": 0, "duplicated_rows": 0, "redeliveries_absorbed": 0,
                               "publish_to_stored_ms": {"p50": None, "p99": None}}, "full_over_raw": 0}
    raw, full = o["raw_baseline"], o["full_pipeline"]
    print(f"raw baseline     {raw['msgs_per_s']:>9.0f} msgs/s   ({raw['received']} of {raw['published_ok']} received)")
    print(f"full pipeline    {full['pings_per_s']:>9.0f} pings/s  lost {full['lost']}  duplicated {full['duplicated_rows']}"
          f"  (re-deliveries absorbed {full['redeliveries_absorbed']})  = {o['full_over_raw']:.0%} of raw")
    print(f"publish→stored   p50 {full['publish_to_stored_ms']['p50']} ms  p99 {full['publish_to_stored_ms']['p99']} ms"
          "  (at full speed: includes the backlog)")
    if "customer_push" in o:
        c = o["customer_push"]
        print(f"customer push    {c['watchers_connected']} WebSockets, {c['achieved_publish_per_s']} pings/s offered:"
              f" publish→customer p50 {c['publish_to_customer_ms']['p50']} ms  p99 {c['publish_to_customer_ms']['p99']} ms"
              f"  ({c['messages_to_customers']} messages)")
        print(f"                 publish→stored p50 {c['publish_to_stored_ms']['p50']} ms  p99 {c['publish_to_stored_ms']['p99']} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=60_000, help="per throughput phase (0 = customer phase only)")
    ap.add_argument("--drivers", type=int, default=2_000)
    ap.add_argument("--replicas", type=int, default=2, help="ingest processes (and raw subscribers)")
    ap.add_argument("--connections", type=int, default=8, help="MQTT connections per ingest process")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ap.add_argument("--batch-max", type=int, default=2000)
    ap.add_argument("--batch-wait-ms", type=int, default=20)
    ap.add_argument("--watchers", type=int, default=10_000, help="customer WebSockets (0 = skip the customer phase)")
    ap.add_argument("--watcher-procs", type=int, default=2)
    ap.add_argument("--customer-rate", type=float, default=5_000)
    ap.add_argument("--customer-seconds", type=float, default=20)
    ap.add_argument("--api-procs", type=int, default=1, help="uvicorn processes; watchers are spread round-robin over them")
    ap.add_argument("--client", choices=("raw", "websockets"), default="raw",
                    help="customer-socket load generator: raw (minimal RFC 6455, reads only sent_at) or the websockets library")
    ap.add_argument("--ws-impl", default="websockets-sansio", help="uvicorn --ws implementation")
    ap.add_argument("--ws-deflate", action=argparse.BooleanOptionalAction, default=True,
                    help="uvicorn offers per-message deflate (only clients that ask get it; the raw client does not)")
    ap.add_argument("--raw-client", choices=("ingest", "paho"), default="ingest",
                    help="raw baseline subscribers: the MQTT client ingest reads with (tracking.mqttwire) or paho-mqtt's")
    ap.add_argument("--ws-ping-interval", type=float, default=None,
                    help="uvicorn --ws-ping-interval in s (default: uvicorn's 20, as `serena up` runs it)")
    ap.add_argument("--profile", metavar="DIR", help="py-spy the ingest, API and watcher processes during the publish window")
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    a = ap.parse_args()
    base_settings = load_settings()
    bench_dsn = bench_database(base_settings)  # Alembic runs its own event loop: before ours
    try:
        result = asyncio.run(main(a, base_settings, bench_dsn))
    finally:
        if not a.keep_db:
            drop_database(bench_dsn)
    if a.json:
        print(json.dumps(result))
    else:
        _print(result)
