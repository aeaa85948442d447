"""The ingestion pipeline: validate → match → geofence → PostGIS (durable) → Redis live → customer push.

`Pipeline.process(batch)` takes raw messages from any source (MQTT, the driver WebSocket,
the HTTP batch endpoint) and returns what was accepted and refused. The order of the steps
is the guarantee:

1. stateless validation (`tracking.validate.parse`), then the motion check against each
   driver's newest fix (Redis live state; PostGIS when Redis cannot answer);
2. map matching (when a road graph is configured) and geofence / stop detection, which
   turn fixes into outbox events;
3. ONE PostgreSQL transaction: history rows (COPY, de-duplicated by key), refused fixes,
   outbox events (`tracking.history.store_batch`);
4. only then Redis live state, the fleet feed and the customer push. These are derived
   state: if Redis is down the batch still counts as stored, and live state is rebuilt
   from history when Redis comes back (`tracking.live`).

`MqttSource` feeds MQTT messages in batches and acknowledges each message (PUBACK) only
after step 3 committed — QoS 1 end to end: a replica killed mid-batch leaves its messages
unacknowledged in its persistent broker session, the broker re-delivers them when the
replica reconnects with the same client id, and the history key turns any that had in fact
been stored into counted duplicates. The MQTT connections are our own minimal asyncio
subscriber (`tracking.mqttwire`): aiomqtt has no manual acknowledgement (it PUBACKs on
receipt, which would acknowledge fixes not yet stored), and paho's manual-ack client reads
in a thread per connection: 0.29 cores of the 0.68 an ingest process used at 5,000 pings/s.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import asyncpg
import orjson
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter, Histogram

from core import events, mqtt
from core.settings import Settings
from tracking import history, live, mqttwire
from tracking.models import Source
from tracking.validate import Fix, Last, Limits, Reason, Rejected, check_motion, parse

log = logging.getLogger("serena.tracking.ingest")

ACCEPTED = Counter("serena_tracking_fixes_accepted_total", "GPS fixes stored in history", ["source"])
REJECTED = Counter("serena_tracking_fixes_rejected_total", "GPS fixes refused, by reason", ["reason"])
LATE = Counter("serena_tracking_fixes_late_total", "Accepted fixes older than the driver's newest (history only)")
BATCH_SECONDS = Histogram("serena_tracking_batch_seconds", "Time to process one ingest batch",
                          buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
REDIS_FAILURES = Counter("serena_tracking_redis_failures_total", "Batches whose live-state update or push failed (history kept)")
STAGE_SKIPPED = Counter("serena_tracking_stage_skipped_total", "Batches a pipeline stage could not run on (Redis down)", ["stage"])
LIVE_REBUILDS = Counter("serena_tracking_live_rebuilds_total", "Live state rebuilt from history (Redis came back empty)")

_SOURCE_NAMES = {Source.MQTT: "mqtt", Source.WEBSOCKET: "websocket", Source.HTTP_BATCH: "http"}


class Inbound(NamedTuple):
    """One received message before validation."""

    driver_id: int  # the authenticated driver (topic / token), 0 if the topic could not be read
    payload: Any  # bytes / str of JSON, or an already-parsed object
    source: int = Source.MQTT
    received_at: float = 0.0  # epoch s; 0 = now


@dataclass
class BatchResult:
    accepted: list[Fix] = field(default_factory=list)  # stored now (new rows)
    rejected: list[Rejected] = field(default_factory=list)  # refused, duplicates included
    events: list[events.NewEvent] = field(default_factory=list)  # emitted through the outbox


class Stage(Protocol):
    """A pluggable step on accepted fixes before they are stored (map matching, geofences, stop detection)."""

    async def __call__(self, fixes: list[Fix]) -> list[events.NewEvent]: ...


Push = Callable[[list[Fix], aioredis.Redis], Awaitable[list[tuple[str, bytes]]]]  # returns (channel, message) to publish


class Pipeline:
    """Validate, store and fan out batches of fixes (see the module docstring)."""

    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis,
                 stages: Sequence[Stage] = (), push: Push | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.limits = Limits.of(settings)
        self.live = live.LiveState(redis, settings.redis_prefix)
        self.partitions = history.Partitions()
        self.stages = list(stages)
        self.push = push
        self.clock = clock
        self.last: dict[int, Last] = {}  # this replica's view of each driver's newest fix (Redis is the shared one)
        self._rebuild_task: asyncio.Task | None = None
        # One batch at a time: stages keep per-batch state between their call and the push,
        # and the API shares one pipeline between many driver WebSockets.
        self._lock = asyncio.Lock()

    async def _previous(self, driver_ids: list[int]) -> dict[int, Last]:
        """Each driver's newest accepted fix: this replica's memory, else the shared live state.

        Memory first: with a shared subscription every replica soon knows every driver, and a
        remembered fix that is older than the global newest still bounds the implied speed
        correctly (over a longer dt); lateness for events is re-checked by the live state's
        newer-only rule and by the geofence tracker, which ignores fixes older than its own.
        """
        found: dict[int, Last] = {d: self.last[d] for d in driver_ids if d in self.last}
        missing = [d for d in driver_ids if d not in found]
        if not missing:
            return found
        try:
            for d, row in (await self.live.get(missing)).items():
                found[d] = Last(row["ts"], row["lat"], row["lng"], row.get("accuracy_m"), row.get("seq"))
        except (redis.exceptions.RedisError, OSError):
            REDIS_FAILURES.inc()
            found.update(await history.last_fixes(self.pool, missing))
        return found

    async def process(self, batch: Sequence[Inbound]) -> BatchResult:
        """Validate and durably store one batch, then update live state and push; raises only if storing failed."""
        async with self._lock:
            return await self._process(batch)

    async def _process(self, batch: Sequence[Inbound]) -> BatchResult:
        t0 = time.perf_counter()
        now = self.clock()
        parsed: list[Fix] = []
        rejects: list[Rejected] = []
        for item in batch:
            for r in parse(item.payload, driver_id=item.driver_id, now=item.received_at or now,
                           limits=self.limits, source=item.source):
                (parsed if type(r) is Fix else rejects).append(r)
        drivers = sorted({f.driver_id for f in parsed})
        prev = await self._previous(drivers) if drivers else {}
        fixes, moved = check_motion(parsed, prev, limits=self.limits)
        rejects += moved
        outbox: list[events.NewEvent] = []
        for stage in self.stages:
            try:
                outbox += await stage(fixes)
            except (redis.exceptions.RedisError, OSError) as exc:
                # Stages keep their state in Redis. Without it this batch's events are skipped
                # (counted), but history, which must not wait for Redis, is still written.
                REDIS_FAILURES.inc()
                STAGE_SKIPPED.labels(type(stage).__name__).inc()
                log.warning("%s skipped for a batch of %d (Redis: %s)", type(stage).__name__, len(fixes), exc)
        async with self.pool.acquire() as conn:
            stored = await history.store_batch(conn, fixes, rejects, partitions=self.partitions, outbox=outbox)
        result = BatchResult(stored.inserted, rejects + stored.duplicates, outbox)
        # Counted per batch, not per fix: a labelled counter costs ~10 µs per call.
        per_source: dict[int, int] = {}
        late = 0
        for f in stored.inserted:
            per_source[f.source] = per_source.get(f.source, 0) + 1
            late += f.late
        for src, n in per_source.items():
            ACCEPTED.labels(_SOURCE_NAMES.get(src, "other")).inc(n)
        if late:
            LATE.inc(late)
        per_reason: dict[str, int] = {}
        for r in result.rejected:
            per_reason[r.reason] = per_reason.get(r.reason, 0) + 1
        for reason, n in per_reason.items():
            REJECTED.labels(str(reason)).inc(n)
        for d in drivers:
            if d in prev:
                self.last[d] = prev[d]
        await self._after_commit([f for f in stored.inserted if not f.late])
        BATCH_SECONDS.observe(time.perf_counter() - t0)
        return result

    async def _after_commit(self, fresh: list[Fix]) -> None:
        """Derived state: live hashes, fleet feed, customer push. Failures are counted, never raised."""
        if not fresh:
            return
        try:
            rows = [f.to_live() for f in fresh]
            present, updated = await self.live.update(rows)
            # Push only what moved the live state: a replica whose memory of a driver is behind
            # (another replica stored newer fixes) must not send the customer back in time.
            moved = set(updated)
            newer = [f for f in fresh if f.driver_id in moved]
            pairs = [(self.live.keys.fleet, orjson.dumps([r for r in rows if r["driver_id"] in moved]))] if newer else []
            if self.push is not None and newer:
                pairs += await self.push(newer, self.redis)
            await self.live.publish_many(pairs)
            for stage in self.stages:
                hook = getattr(stage, "after_commit", None)
                if hook is not None:
                    await hook()
            if not present and (self._rebuild_task is None or self._rebuild_task.done()):
                LIVE_REBUILDS.inc()
                self._rebuild_task = asyncio.create_task(self._rebuild())
        except (redis.exceptions.RedisError, OSError) as exc:
            REDIS_FAILURES.inc()
            log.warning("live state / push failed (history is stored; live state rebuilds later): %s", exc)

    async def _rebuild(self) -> None:
        try:
            n = await self.live.rebuild(self.pool)
            if n:
                log.info("live state rebuilt from history: %d drivers", n)
        except Exception as exc:  # noqa: BLE001 - retried by the next batch that sees no marker
            log.warning("live state rebuild failed: %s", exc)


# --- MQTT -------------------------------------------------------------------------------------


class _Msg(NamedTuple):
    conn: int  # index of the connection it came on (acks go back on the same one)
    gen: int  # that connection's generation: an ack after a reconnect is not sent (the broker re-delivers)
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float


class MqttSource:
    """Shared-subscription consumer of `{root}/drivers/+/location` with PUBACK after storage.

    `connections` MQTT connections per process, each a persistent session named
    `{group}-{replica}-{i}`. Every connection has its own in-flight window at the broker
    (our Mosquitto's max_inflight_messages, 100), and since we acknowledge only after the
    batch commits, one connection delivers at most ~100 messages per batch cycle: measured,
    2 processes x 2 connections capped near 6,000 pings/s and 2 x 8 reached 10,800
    (docs/benchmarks.md, Ingest). Hence the default of 8.
    Client ids must be stable across restarts (see core.mqtt.service_client): a restarted
    replica reclaims its session and with it the messages it had not acknowledged.

    The connections run on the event loop (`tracking.mqttwire`), not in paho threads: a
    message is parsed in the socket's read callback and queued, and a batch's PUBACKs go out
    as one write per connection.
    """

    def __init__(self, settings: Settings, *, replica: str, connections: int | None = None,
                 receive_maximum: int = 2000) -> None:
        self.settings = settings
        self.replica = replica
        self.n = connections or settings.tracking_mqtt_connections
        self.receive_maximum = receive_maximum
        self.topic = mqtt.shared(settings.tracking_share_group, mqtt.drivers_filter("location", root=settings.mqtt_topic_root))
        self.root = settings.mqtt_topic_root
        self.queue: collections.deque[_Msg] = collections.deque()
        self.clients: list[mqttwire.Subscriber] = []
        self._wake: asyncio.Future | None = None

    def client_id(self, i: int) -> str:
        return f"{self.settings.tracking_share_group}-{self.replica}-{i}"

    def start(self) -> None:
        ep = mqtt.parse_mqtt_url(self.settings.mqtt_url)
        for i in range(self.n):
            c = mqttwire.Subscriber(
                host=ep.host, port=ep.port, tls=ep.tls, client_id=self.client_id(i),
                username=ep.username or self.settings.mqtt_service_username,
                password=ep.password or self.settings.mqtt_service_password,
                topic_filter=self.topic, on_publish=self._on_publish(i), keepalive_s=30,
                session_expiry_s=mqtt.SESSION_EXPIRY_S,
                # The broker may have this many PUBLISHes unacknowledged towards us: it bounds a batch.
                receive_maximum=self.receive_maximum)
            c.start()
            self.clients.append(c)

    def _on_publish(self, i: int):
        queue = self.queue

        def cb(gen, mid, qos, topic, payload, received_at):
            queue.append(_Msg(i, gen, mid, qos, topic, payload, received_at))
            w = self._wake
            if w is not None:
                self._wake = None
                if not w.done():
                    w.set_result(None)
        return cb

    @property
    def connected(self) -> list[bool]:
        return [c.connected.is_set() for c in self.clients]

    async def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in self.clients)), timeout_s)
        except TimeoutError:
            raise TimeoutError("MQTT subscription not confirmed") from None

    async def next_batch(self, max_items: int, wait_s: float) -> list[_Msg]:
        """Up to max_items messages: waits for the first, then until the oldest has waited wait_s for the batch to fill.

        The wait counts from the oldest message's arrival, not from this call: messages that
        queued up while the previous batch was being stored have waited already, and under
        load they go out at once instead of waiting wait_s more.
        """
        if not self.queue:
            self._wake = w = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(w, timeout=0.5)
            except TimeoutError:
                return []  # let the caller look at its stop flag
            finally:
                self._wake = None
        if len(self.queue) < max_items and wait_s > 0:
            deadline = self.queue[0].received_at + wait_s
            while len(self.queue) < max_items and (left := deadline - time.time()) > 0:
                await asyncio.sleep(min(0.005, left))
        q = self.queue
        if len(q) <= max_items:
            out = list(q)
            q.clear()
            return out
        return [q.popleft() for _ in range(max_items)]

    def to_inbound(self, msgs: Sequence[_Msg]) -> list[Inbound]:
        out = []
        prefix = f"{self.root}/drivers/"
        for m in msgs:
            try:
                rest = m.topic[len(prefix):] if m.topic.startswith(prefix) else ""
                driver_id = int(rest.split("/", 1)[0])
            except ValueError:
                driver_id = 0
            out.append(Inbound(driver_id, m.payload, Source.MQTT, m.received_at))
        return out

    def ack(self, msgs: Sequence[_Msg]) -> None:
        """PUBACK each message on the connection it came on (after the batch was stored): one write per connection."""
        per: dict[tuple[int, int], list[int]] = {}
        for m in msgs:
            if m.qos > 0:
                per.setdefault((m.conn, m.gen), []).append(m.mid)
        for (conn, gen), mids in per.items():
            self.clients[conn].ack(gen, mids)

    def stop(self) -> None:
        for c in self.clients:
            c.stop()


async def run_mqtt(pipeline: Pipeline, source: MqttSource, *, stop: asyncio.Event | None = None) -> None:
    """Consume until `stop` is set: batch → process → ack; a failed store is retried with backoff, never acked."""
    s = pipeline.settings
    stop = stop or asyncio.Event()
    backoff = 0.1
    while not stop.is_set():
        msgs = await source.next_batch(s.tracking_batch_max, s.tracking_batch_wait_ms / 1000)
        if not msgs:
            continue
        inbound = source.to_inbound(msgs)
        while True:
            try:
                await pipeline.process(inbound)
                break
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("storing a batch of %d failed (%s); retrying in %.1f s, nothing acknowledged",
                            len(msgs), exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if stop.is_set():
                    return
        backoff = 0.1
        source.ack(msgs)


async def run_ingest(settings: Settings, *, replica: str, stop: asyncio.Event | None = None,
                     ready: Callable[[], None] | None = None) -> None:
    """The `serena ingest` process body: pool, Redis, pipeline stages, MQTT source, retention."""
    from tracking import eta, gctune, matching  # noqa: PLC0415 - optional engines, loaded only by the process

    gctune.for_large_live_heap()  # a full collection of a replica's per-driver state stalled batches ~0.12 s
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=4)
    r = aioredis.from_url(settings.redis_url)
    stages: list[Stage] = []
    matcher = matching.from_settings(settings, redis=r)
    if matcher is not None:
        stages.append(matcher)
    travel = None
    g = getattr(getattr(matcher, "matcher", matcher), "g", None)
    if g is not None:
        travel = eta.RoutedTravel(g)  # ETAs on the routing engine's travel times (same graph as matching)
    stages += default_stages(settings=settings, pool=pool, redis=r, travel=travel)
    eta_stage = next(st for st in stages if isinstance(st, eta.EtaStage))
    pipeline = Pipeline(settings=settings, pool=pool, redis=r, stages=stages, push=eta.make_push(settings, eta_stage))
    try:
        await pipeline.live.ensure(pool)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("Redis unavailable at start (%s); live state rebuilds when it is back", exc)
    source = MqttSource(settings, replica=replica)
    source.start()
    stop = stop or asyncio.Event()
    housekeeping = asyncio.create_task(_housekeeping(settings, pool, stop))
    links_consumer = asyncio.create_task(_links_consumer(settings, pool, r, stop))
    try:
        await source.wait_subscribed(timeout_s=30)
        log.info("ingest %s subscribed to %s with %d connections", replica, source.topic, source.n)
        if ready:
            ready()
        await run_mqtt(pipeline, source, stop=stop)
    finally:
        housekeeping.cancel()
        links_consumer.cancel()
        source.stop()
        await r.aclose()
        await pool.close()


async def _links_consumer(settings: Settings, pool: asyncpg.Pool, r: aioredis.Redis, stop: asyncio.Event) -> None:
    """`delivery.completed` → the order's tracking links expire after the grace period (one consumer group, any replica)."""
    from functools import partial

    from core.consumer import Consumer
    from tracking import events as tracking_events  # noqa: PLC0415

    handler = partial(tracking_events.handle_delivery_completed, grace_s=settings.tracking_link_grace_s)
    consumer = Consumer(group="tracking-links", handler=handler, db=pool, redis=r, prefix=settings.redis_prefix,
                        types=[tracking_events.DELIVERY_COMPLETED])
    try:
        await consumer.run(stop)
    except Exception as exc:  # noqa: BLE001 - link expiry must not take ingestion down
        log.warning("tracking link consumer stopped: %s", exc)


def default_stages(*, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, travel=None) -> list[Stage]:
    """ETA + stop events, and the geofence engine's zone/stop events when the geofence package is there."""
    from tracking import eta, events as tracking_events  # noqa: PLC0415

    if tracking_events.geofence_available():
        eta_stage = eta.EtaStage(settings=settings, redis=redis, stop_events=False, travel=travel)
        return [eta_stage, tracking_events.GeofenceStage(settings=settings, pool=pool, redis=redis, plans_from=eta_stage)]
    return [eta.EtaStage(settings=settings, redis=redis, travel=travel)]


async def _housekeeping(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Tomorrow's partition ahead of midnight, and retention, hourly."""
    import datetime as dt

    while not stop.is_set():
        try:
            today = dt.datetime.now(dt.UTC).date()
            async with pool.acquire() as conn:
                for d in (today, today + dt.timedelta(days=1)):
                    await conn.execute("SELECT tracking_ensure_partition($1)", d)
            await history.apply_retention(pool, retention_days=settings.tracking_retention_days)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not stop ingestion
            log.warning("tracking housekeeping failed: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), timeout=3600)
        except TimeoutError:
            pass


def reasons_of(result: BatchResult) -> dict[str, int]:
    """Counts of refused fixes by reason (for API responses)."""
    out: dict[str, int] = {}
    for r in result.rejected:
        out[str(r.reason)] = out.get(str(r.reason), 0) + 1
    return out


__all__ = ["BatchResult", "Inbound", "MqttSource", "Pipeline", "Reason", "run_ingest", "run_mqtt"]
