"""The fleet-board feed: one aggregation loop per API process turns live positions into 1 Hz frames for every /ws/fleet watcher.

The cost of the board must not grow with dispatchers × drivers. So each API process runs ONE
loop (started with its first watcher, stopped with its last) that once per `interval_s`:

1. reads tracking's live state — `HGETALL` of the small per-driver event-time hash, then
   `HMGET` of only the drivers whose time changed since the previous tick — so 1,000 drivers
   and any number of dispatchers cost two Redis reads per second per process;
2. builds one frame of the drivers that moved since the previous frame (newest fix only: many
   fixes of a driver within the second collapse into one entry), in compact columnar arrays,
   encodes it once and hands the same string to every watcher;
3. every `check_every_s`, reads a cheap signature of the dispatch tables (newest plan version,
   newest job transition, exceptions and shifts) and tells watchers what changed
   (`{"type": "changed", "what": ["plan", "kpis", "exceptions"]}`); the page then refetches
   those over HTTP with its own token. A message on `{prefix}fleet:events` or on a
   planner's `{prefix}tasks:{driver_id}` channel makes the next tick check at once, so a
   re-plan shows within a second rather than at the next poll.

Rejected: pushing the plan / KPIs themselves through the feed — they are per-permission
HTTP resources already, change rarely, and re-serving them here would duplicate the API.
Rejected: one loop or one Redis subscription per connection — it is exactly the N × M cost
the board must avoid. Rejected: subscribing tracking's `tracking:fleet` channel for
positions — a process that joins late or drops a message would show a stale driver until it
moves again; reading the live hashes is self-healing.

A slow watcher never holds the others back: its queue is short, and when it overflows the
queued deltas are dropped and the watcher gets a fresh snapshot instead (a newer position
supersedes any older one, so nothing a dispatcher needs is lost).

Frames (JSON text):

    {"type": "snapshot", "seq": n, "at": epoch_s, "drivers": COLUMNS}   all known drivers
    {"type": "positions", "seq": n, "at": epoch_s, "drivers": COLUMNS}  drivers that moved
    {"type": "changed", "seq": n, "at": epoch_s, "what": [...], "plan_version": v}

    COLUMNS = {"id": [...], "lat": [...], "lng": [...], "heading": [...], "speed": [...], "ts": [...]}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from core import fleetstate

log = logging.getLogger("serena.dispatch.feed")

EVENTS_CHANNEL = "fleet:events"  # under settings.redis_prefix; any JSON body, e.g. {"what": "exceptions"}
QUEUE_FRAMES = 4  # frames a watcher may have queued before it is switched to a fresh snapshot
CHANGES = ("plan", "kpis", "exceptions", "drivers")


def events_channel(prefix: str) -> str:
    return f"{prefix}{EVENTS_CHANNEL}"


async def notify(redis: aioredis.Redis, prefix: str, what: str = "exceptions", **data: Any) -> None:
    """Tell every API process's feed that something the board shows changed (it re-checks within a second)."""
    await redis.publish(events_channel(prefix), orjson.dumps({"what": what, **data}))


# --- the throttle: pure, unit-tested ---------------------------------------------------------------------------


class Positions:
    """Newest fix per driver, and which drivers moved since the last frame; no I/O.

    `offer` may be called many times between frames; `take` returns each moved driver once,
    with its newest fix, and remembers what was sent so an unchanged driver is not re-sent.
    """

    def __init__(self) -> None:
        self.latest: dict[int, dict] = {}  # driver id -> newest fix seen
        self._sent_ts: dict[int, float] = {}
        self._moved: set[int] = set()

    def offer(self, rows: Iterable[dict]) -> None:
        for row in rows:
            try:
                d, ts = int(row["driver_id"]), float(row["ts"])
            except (KeyError, TypeError, ValueError):
                continue
            cur = self.latest.get(d)
            if cur is not None and float(cur["ts"]) >= ts:
                continue  # an older or repeated fix never moves a driver backwards
            self.latest[d] = row
            if self._sent_ts.get(d) != ts:
                self._moved.add(d)

    def forget(self, driver_ids: Iterable[int]) -> None:
        """Drop drivers whose live state is gone (tracking removed them); they stay in no snapshot."""
        for d in driver_ids:
            self.latest.pop(d, None)
            self._sent_ts.pop(d, None)
            self._moved.discard(d)

    def take(self) -> list[dict]:
        """The drivers that moved since the previous `take`, newest fix each, ordered by driver id."""
        out = [self.latest[d] for d in sorted(self._moved)]
        for row in out:
            self._sent_ts[int(row["driver_id"])] = float(row["ts"])
        self._moved.clear()
        return out

    def all(self) -> list[dict]:
        return [self.latest[d] for d in sorted(self.latest)]


def columns(rows: list[dict]) -> dict[str, list]:
    """Fixes as compact parallel arrays (about a third of the bytes of a list of objects)."""
    def r(v: Any, nd: int) -> float | None:
        return None if v is None else round(float(v), nd)

    return {
        "id": [int(x["driver_id"]) for x in rows],
        "lat": [r(x["lat"], 6) for x in rows],
        "lng": [r(x["lng"], 6) for x in rows],
        "heading": [r(x.get("heading_deg"), 0) for x in rows],
        "speed": [r(x.get("speed_mps"), 1) for x in rows],
        "ts": [r(x["ts"], 1) for x in rows],
    }


# --- watchers ----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Watcher:
    """One /ws/fleet connection's queue of encoded frames."""

    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))
    resync: bool = False  # fell behind: its next frame is a snapshot
    dropped: int = 0  # deltas dropped because it fell behind

    async def next(self, feed: FleetFeed) -> str:
        frame = await self.queue.get()
        if self.resync:
            self.resync = False
            self._drain()
            return feed.snapshot_frame()
        return frame

    def offer(self, frame: str) -> None:
        if self.resync:
            return
        if self.queue.full():
            self.dropped += self.queue.qsize()
            self._drain()
            self.resync = True
            self.queue.put_nowait("")  # wakes `next`, which sends a snapshot instead
            return
        self.queue.put_nowait(frame)

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


# --- the feed ----------------------------------------------------------------------------------------------------


class FleetFeed:
    """The per-process aggregation loop (see the module docstring).

    Two tasks: `_run` reads live positions from Redis once per `interval_s` and never touches
    Postgres; `_check` reads the dispatch tables' signature every `check_every_s` (or at once
    on a notice). They were one loop, and a saturated database pool (every HTTP request holds
    one of its connections) held each tick — and so the first frame every new watcher waits
    for — behind a connection: under load every fleet board got no frame within 10 s.
    """

    DB_TIMEOUT_S = 5.0  # a table check that cannot get a connection or answer by then is skipped (tried again next time)

    def __init__(self, *, redis: aioredis.Redis, prefix: str, pool: Any = None, interval_s: float = 1.0,
                 check_every_s: float = 3.0, clock: Callable[[], float] = time.time) -> None:
        # The live-state layout is the kernel's contract (core.fleetstate): tracking writes it,
        # dispatch reads it, neither imports the other (ARCHITECTURE.md).
        self.redis, self.prefix, self.pool = redis, prefix, pool
        self.interval_s, self.check_every_s, self.clock = interval_s, check_every_s, clock
        self.live_key = fleetstate.live_key(prefix)
        self.live_ts_key = fleetstate.live_ts_key(prefix)
        self.positions = Positions()
        self.watchers: set[Watcher] = set()
        self.seq = 0
        self.reads = 0  # Redis reads of live state (tests check it does not grow with watchers)
        self.frame_ms: float = 0.0  # time to build and fan out the last frame
        self._known_ts: dict[bytes, bytes] = {}
        self._signature: tuple | None = None
        self._check_now = asyncio.Event()
        self._ready = asyncio.Event()  # the first positions read is done
        self._checked = asyncio.Event()  # the first table check is done (or failed)
        self._tasks: list[asyncio.Task] = []
        self._joining = 0  # watchers between `watch()` and joining the set: the loop must not stop under them
        self._lock = asyncio.Lock()

    @property
    def _task(self) -> asyncio.Task | None:  # the positions loop (tests look at it)
        return self._tasks[0] if self._tasks else None

    # -- watchers --

    async def watch(self, *, timeout_s: float = 10.0) -> Watcher:
        """A new watcher; its first frame is a snapshot of every driver's newest position."""
        self._joining += 1
        try:
            async with self._lock:
                if not self._tasks or self._tasks[0].done():
                    self._ready.clear()
                    self._checked.clear()
                    self._tasks = [asyncio.create_task(self._run(), name="fleet-feed"),
                                   asyncio.create_task(self._check(), name="fleet-feed-tables"),
                                   asyncio.create_task(self._listen(), name="fleet-feed-events")]
            await asyncio.wait_for(self._ready.wait(), timeout=timeout_s)
            # The table baseline is taken before the first watcher joins (else a change made just
            # after it joined would become the baseline and never be announced) — but a slow
            # database delays the snapshot by at most a second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checked.wait(), 1.0)
            w = Watcher()
            # No await between the snapshot and joining the set: no frame can fall in between.
            w.queue.put_nowait(self.snapshot_frame())
            self.watchers.add(w)
        except BaseException:
            self._joining -= 1
            if not self.watchers and not self._joining:
                await self.stop()  # nobody left to feed: do not leave the loop running
            raise
        self._joining -= 1
        return w

    async def unwatch(self, w: Watcher) -> None:
        self.watchers.discard(w)
        if not self.watchers and not self._joining:
            await self.stop()

    async def stop(self) -> None:
        async with self._lock:
            if self.watchers or self._joining:
                return  # somebody joined while we waited for the lock
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            self._known_ts.clear()  # a restart re-reads everything: positions may have moved meanwhile

    # -- frames --

    def _frame(self, kind: str, **body: Any) -> str:
        self.seq += 1
        return orjson.dumps({"type": kind, "seq": self.seq, "at": round(self.clock(), 3), **body}).decode()

    def snapshot_frame(self) -> str:
        return self._frame("snapshot", drivers=columns(self.positions.all()))

    def _broadcast(self, frame: str) -> None:
        for w in list(self.watchers):
            w.offer(frame)

    # -- the loop --

    async def read_live(self) -> list[dict]:
        """Fixes of the drivers whose event time changed since the previous read (two Redis calls)."""
        self.reads += 1
        stamps: dict[bytes, bytes] = await self.redis.hgetall(self.live_ts_key)
        if len(stamps) < len(self._known_ts):
            gone = [d for d in self._known_ts if d not in stamps]
            for d in gone:
                del self._known_ts[d]
            self.positions.forget(int(d) for d in gone)
        changed = [d for d, ts in stamps.items() if self._known_ts.get(d) != ts]
        if not changed:
            return []
        values = await self.redis.hmget(self.live_key, changed)
        rows = []
        for d, v in zip(changed, values, strict=True):
            if v is not None:
                rows.append(orjson.loads(v))
                self._known_ts[d] = stamps[d]
        return rows

    async def tick(self) -> None:
        """One frame: positions of drivers that moved, then (tests drive this) what changed in the dispatch tables."""
        await self.tick_positions()
        await self.check_tables()

    async def tick_positions(self) -> None:
        """The positions frame of the drivers that moved (Redis only)."""
        t0 = time.perf_counter()
        self.positions.offer(await self.read_live())
        moved = self.positions.take()
        if moved and self.watchers:
            self._broadcast(self._frame("positions", drivers=columns(moved)))
        self.frame_ms = (time.perf_counter() - t0) * 1000

    async def check_tables(self) -> None:
        """A `changed` notice when the dispatch tables' signature moved since the previous check."""
        if self.pool is None:
            return
        what, version = await asyncio.wait_for(self._changes(), self.DB_TIMEOUT_S)
        if what and self.watchers:
            self._broadcast(self._frame("changed", what=what, plan_version=version))

    async def _changes(self) -> tuple[list[str], int | None]:
        row = await self.pool.fetchrow(
            "SELECT (SELECT max(version) FROM dispatch_plans) AS plan,"
            " (SELECT max(id) FROM job_transitions) AS transition,"
            " (SELECT max(id) FROM dispatch_exceptions) AS exc_new,"
            " (SELECT count(*) FROM dispatch_exceptions WHERE resolved_at IS NULL) AS exc_open,"
            " (SELECT max(id) FROM driver_shifts) AS shift_new,"
            " (SELECT count(*) FROM driver_shifts WHERE ended_at IS NULL) AS on_duty")
        sig = tuple(row.values())
        previous, self._signature = self._signature, sig
        if previous is None or previous == sig:
            return [], row["plan"]
        what = []
        if sig[0] != previous[0]:
            what.append("plan")
        if sig[0:2] != previous[0:2] or sig[4:6] != previous[4:6]:
            what.append("kpis")
        if sig[2:4] != previous[2:4]:
            what.append("exceptions")
        if sig[4:6] != previous[4:6]:
            what.append("drivers")
        return what, row["plan"]

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick_positions()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis hiccup: keep the board alive, retry next tick
                log.warning("fleet feed tick failed: %s", exc)
            self._ready.set()
            await asyncio.sleep(max(self.interval_s - (time.monotonic() - started), 0.05))

    async def _check(self) -> None:
        while True:
            try:
                await self.check_tables()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Postgres slow or down: positions keep flowing, check again later
                log.warning("fleet feed table check failed: %r", exc)
            self._checked.set()
            # A notice (planner publication, fleet:events) cuts the wait short; so a re-plan shows within a second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_now.wait(), self.check_every_s)
            self._check_now.clear()
            await asyncio.sleep(min(self.interval_s, 0.25))  # a burst of notices makes one check, not one each

    async def _listen(self) -> None:
        """Planner task-list publications and `fleet:events` notices → check the tables at once."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(events_channel(self.prefix))
                await pubsub.psubscribe(f"{self.prefix}tasks:*")
                async for msg in pubsub.listen():
                    if msg.get("type") in ("message", "pmessage"):
                        self._check_now.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis restart: resubscribe; the table poll covers the gap
                log.warning("fleet feed lost its Redis subscription (%s); resubscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def feed_for(app) -> FleetFeed:
    """The app's one feed (created on first use)."""
    feed = getattr(app.state, "fleet_feed", None)
    if feed is None:
        st = app.state
        feed = FleetFeed(redis=st.redis, prefix=st.settings.redis_prefix, pool=getattr(st, "pg_pool", None))
        st.fleet_feed = feed
    return feed
