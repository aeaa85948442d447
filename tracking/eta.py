"""ETAs for each driver's remaining stops, as intervals, and the customer push; the driver-plan interface.

The driver plan (written by dispatch, read here). Dispatch owns planning; tracking only
needs each driver's remaining stops in order, so the interface is a Redis projection that
dispatch rewrites whenever it re-plans a driver (`write_plan`, or the same JSON directly):

    {prefix}tracking:plans         hash  driver_id -> {"version": int, "stops": [stop, ...]}
    {prefix}tracking:order_driver  hash  order_id  -> driver_id (kept by write_plan)

    stop = {"stop_id": str, "order_id": str | null, "lat": float, "lng": float,
            "service_s": float (time spent at the stop), "status": "pending" | "arrived" | "done" | "failed"}

Stops are in planned sequence; done/failed ones may stay in the list (they are skipped).
Dispatch keeps its plan durably in its own tables; this projection can always be rebuilt
from them, so it is not a second source of truth.

ETA model. From the driver's newest position, legs are driven in plan order; each leg's
travel time comes from the routing engine when a graph is configured (`RoutedTravel`:
`routing.paths.route`, cached), else from the great-circle distance x `DETOUR` at
`FALLBACK_SPEED_MPS` (urban average). A driver's ETAs are recomputed when its plan changes
or every `refresh_s` (5 s) of event time. The interval widens with the time ahead: [t - max(60 s, 10 %), t + max(120 s, 25 %)],
a deliberately simple band until learned speeds give a real distribution (docs/tracking.md).

Push rule (per order, shared by all ingest replicas through `{prefix}tracking:eta`): a
stop's published interval changes only when its midpoint moved by at least
`tracking_eta_min_change_s` or the last one is older than `tracking_eta_max_interval_s`,
so the customer does not see a number that twitches with every ping; positions still go
out with every fix. The `/ws/track` handler re-sends the latest state every 30 s while no
fix arrives.

Stop events (until the geofence engine's stop detection lands): `stop.arriving` when the
next stop's ETA is within `ARRIVING_S`, `stop.arrived` when the driver is within
`ARRIVED_M` of it. Each is emitted once per stop through the outbox, with an event id
derived from (stop, kind), so a re-run cannot emit it twice.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from core import events, fleetstate
from core.settings import Settings
from tracking import live
from tracking.validate import Fix, haversine_m

DETOUR = 1.35  # road distance / straight-line distance, typical of a city grid
FALLBACK_SPEED_MPS = 8.3  # 30 km/h
ARRIVING_S = 300.0  # stop.arriving when the next stop is at most this far away in time
ARRIVED_M = 60.0  # stop.arrived when the driver is this close to the stop
_EVENT_NS = uuid.UUID("3b0f6f0e-6a55-4a3e-9a55-5e7e6a1c0d11")
OPEN = ("pending", "arrived")

TravelTime = Callable[[float, float, float, float], float]  # (lat1, lng1, lat2, lng2) -> seconds


class Keys:
    def __init__(self, prefix: str) -> None:
        # Written by dispatch, read here: the kernel's contract (core.fleetstate).
        self.plans = fleetstate.plans_key(prefix)
        self.order_driver = fleetstate.order_driver_key(prefix)
        self.eta = fleetstate.eta_key(prefix)  # order_id -> published interval JSON (dispatch reads it: late risk, drift)
        self.stop_events = prefix + "tracking:stop_events"  # set of "stop_id:kind" already emitted


def fallback_travel_s(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    return haversine_m(lat1, lng1, lat2, lng2) * DETOUR / FALLBACK_SPEED_MPS


def interval(t_s: float) -> tuple[float, float]:
    """Earliest and latest seconds-from-now for a point estimate t_s (see module docstring)."""
    return max(0.0, t_s - max(60.0, 0.10 * t_s)), t_s + max(120.0, 0.25 * t_s)


@dataclass
class StopEta:
    stop_id: str
    order_id: str | None
    index: int  # position among the driver's remaining stops (0 = next)
    eta_s: float  # point estimate, seconds from the fix
    earliest: float  # epoch s
    latest: float  # epoch s
    status: str


def compute(stops: Sequence[dict], *, lat: float, lng: float, now: float, travel: TravelTime = fallback_travel_s) -> list[StopEta]:
    """ETA intervals of the open stops in plan order from (lat, lng) at `now`."""
    out: list[StopEta] = []
    t = 0.0
    here = (lat, lng)
    for s in stops:
        if s.get("status", "pending") not in OPEN:
            continue
        if s.get("status") != "arrived":
            t += travel(here[0], here[1], float(s["lat"]), float(s["lng"]))
        lo, hi = interval(t)
        out.append(StopEta(str(s["stop_id"]), s.get("order_id"), len(out), t, now + lo, now + hi, s.get("status", "pending")))
        t += float(s.get("service_s", 120.0))
        here = (float(s["lat"]), float(s["lng"]))
    return out


async def write_plan(redis: aioredis.Redis, *, prefix: str, driver_id: int, stops: Sequence[dict], version: int = 0) -> None:
    """Dispatch's call: replace a driver's remaining stops (in order) and the order → driver index."""
    k = Keys(prefix)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(k.plans, str(driver_id), orjson.dumps({"version": version, "stops": list(stops)}))
    for s in stops:
        if s.get("order_id"):
            pipe.hset(k.order_driver, str(s["order_id"]), str(driver_id))
    await pipe.execute()


async def read_plan(redis: aioredis.Redis, *, prefix: str, driver_id: int) -> dict | None:
    raw = await redis.hget(Keys(prefix).plans, str(driver_id))
    return orjson.loads(raw) if raw else None


async def driver_of_order(redis: aioredis.Redis, *, prefix: str, order_id: str) -> int | None:
    raw = await redis.hget(Keys(prefix).order_driver, order_id)
    return int(raw) if raw else None


def stop_event_id(stop_id: str, kind: str) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NS, f"{stop_id}:{kind}")


class EtaStage:
    """Pipeline stage: per batch, ETAs of the drivers' open stops, the push decision, stop events.

    It computes before the batch is stored (its events go into the same transaction) and
    leaves the Redis writes to `push`, which runs after the commit.
    """

    def __init__(self, *, settings: Settings, redis: aioredis.Redis, travel: TravelTime | None = None,
                 clock: Callable[[], float] = time.time, stop_events: bool = True, refresh_s: float = 5.0) -> None:
        self.stop_events = stop_events  # False when the geofence engine detects stops (tracking.events)
        self.refresh_s = refresh_s
        self.cache: dict[int, tuple[float, int, list[StopEta]]] = {}  # driver -> (ts, plan hash, etas)
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.live_keys = live.Keys(settings.redis_prefix)
        self.redis_state = live.LiveState(redis, settings.redis_prefix)  # for its one-argument HMGET
        self.travel = travel or fallback_travel_s
        self.clock = clock
        self.pending: dict[int, dict[str, Any]] = {}  # driver -> message to push after commit
        self.pending_eta: dict[str, bytes] = {}
        self.pending_flags: list[str] = []
        # The plans read for the last batch, for a later stage of the same batch (tracking.events.GeofenceStage):
        # (the batch's fix list, driver -> raw plan for every driver with a non-late fix; None = no plan).
        self.batch_plans: tuple[list[Fix] | None, dict[int, bytes | None]] = (None, {})

    async def __call__(self, fixes: list[Fix]) -> list[events.NewEvent]:
        newest: dict[int, Fix] = {}
        for f in fixes:
            if not f.late and (f.driver_id not in newest or newest[f.driver_id].ts < f.ts):
                newest[f.driver_id] = f
        self.pending, self.pending_eta, self.pending_flags = {}, {}, []
        self.batch_plans = (None, {})
        if not newest:
            return []
        drivers = list(newest)
        plans_raw = await self.redis_state.hmget(self.keys.plans, drivers)
        self.batch_plans = (fixes, dict(zip(drivers, plans_raw, strict=True)))
        raw_plans = {d: p for d, p in zip(drivers, plans_raw, strict=True) if p}
        plans = {d: orjson.loads(p) for d, p in raw_plans.items()}
        if not plans:
            return []
        now = self.clock()
        per_driver = {}
        for d in plans:
            # Recompute a driver's ETAs when its plan changed or every `refresh_s` of event time;
            # in between the previous intervals (absolute times) stand. Bounds routing queries
            # to one per driver per refresh instead of one per fix.
            cached = self.cache.get(d)
            key = hash(raw_plans[d])
            if cached is not None and cached[1] == key and 0 <= newest[d].ts - cached[0] < self.refresh_s:
                per_driver[d] = cached[2]
                continue
            etas = compute(plans[d]["stops"], lat=newest[d].lat, lng=newest[d].lng, now=newest[d].ts, travel=self.travel)
            self.cache[d] = (newest[d].ts, key, etas)
            per_driver[d] = etas
        orders = [e.order_id for etas in per_driver.values() for e in etas if e.order_id]
        prev_raw = await self.redis_state.hmget(self.keys.eta, orders) if orders else []
        prev = {o: orjson.loads(p) for o, p in zip(orders, prev_raw, strict=True) if p}
        flags = [f"{e.stop_id}:{kind}" for etas in per_driver.values() for e in etas[:1] for kind in ("arriving", "arrived")
                 if self.stop_events]
        done = set()
        if flags:
            hits = await self.redis.smismember(self.keys.stop_events, flags)
            done = {f for f, h in zip(flags, hits, strict=True) if h}
        out: list[events.NewEvent] = []
        for d, etas in per_driver.items():
            f = newest[d]
            stops_msg = []
            for e in etas:
                shown = prev.get(e.order_id) if e.order_id else None
                mid = (e.earliest + e.latest) / 2
                if e.order_id and (shown is None
                                   or abs(mid - (shown["earliest"] + shown["latest"]) / 2) >= self.settings.tracking_eta_min_change_s
                                   or now - shown["published_at"] >= self.settings.tracking_eta_max_interval_s):
                    shown = {"earliest": e.earliest, "latest": e.latest, "published_at": now, "driver_id": d}
                    self.pending_eta[e.order_id] = orjson.dumps(shown)
                stops_msg.append({"stop_id": e.stop_id, "order_id": e.order_id, "index": e.index, "status": e.status,
                                  "eta_earliest": shown["earliest"] if shown else e.earliest,
                                  "eta_latest": shown["latest"] if shown else e.latest})
            self.pending[d] = {"type": "update", **f.to_live(), "stops": stops_msg, "plan_version": plans[d].get("version", 0)}
            if etas and self.stop_events:
                nxt = etas[0]
                payload = {"driver_id": d, "stop_id": nxt.stop_id, "order_id": nxt.order_id, "ts": f.ts,
                           "eta_earliest": nxt.earliest, "eta_latest": nxt.latest}
                stop = next(s for s in plans[d]["stops"] if str(s["stop_id"]) == nxt.stop_id)
                dist = haversine_m(f.lat, f.lng, float(stop["lat"]), float(stop["lng"]))
                for kind, hit in (("arriving", nxt.eta_s <= ARRIVING_S), ("arrived", dist <= ARRIVED_M)):
                    flag = f"{nxt.stop_id}:{kind}"
                    if hit and flag not in done:
                        out.append(events.NewEvent(f"stop.{kind}", {**payload, "distance_m": round(dist, 1)},
                                                   aggregate="stop", aggregate_id=nxt.stop_id,
                                                   event_id=stop_event_id(nxt.stop_id, kind)))
                        self.pending_flags.append(flag)
        return out


class RoutedTravel:
    """Leg travel times from the routing engine (`routing.paths.route` on the CCH, ~0.5 ms a query), cached.

    Keys are the two points rounded to 1e-4 degrees (~10 m): legs between planned stops hit
    the cache for the life of the plan; the first leg (driver → next stop) is asked at most
    once per driver per ETA refresh. A point off the network falls back to the straight line.
    """

    def __init__(self, g, *, max_entries: int = 200_000) -> None:
        from collections import OrderedDict

        self.g = g
        self.cache: OrderedDict[tuple, float] = OrderedDict()
        self.max_entries = max_entries

    def __call__(self, lat1: float, lng1: float, lat2: float, lng2: float) -> float:
        from routing import paths

        key = (round(lat1, 4), round(lng1, 4), round(lat2, 4), round(lng2, 4))
        t = self.cache.get(key)
        if t is not None:
            self.cache.move_to_end(key)
            return t
        try:
            t = float(paths.route(self.g, (lat1, lng1), (lat2, lng2)).time_s)
        except Exception:  # noqa: BLE001 - off the network (SnapError) or no path: the straight line
            t = fallback_travel_s(lat1, lng1, lat2, lng2)
        self.cache[key] = t
        if len(self.cache) > self.max_entries:
            self.cache.popitem(last=False)
        return t


def stages(*, settings: Settings, redis: aioredis.Redis, travel: TravelTime | None = None) -> list[EtaStage]:
    return [EtaStage(settings=settings, redis=redis, travel=travel)]


def make_push(settings: Settings, stage: EtaStage | None = None):
    """After-commit step: each driver's update (position + ETAs) for its channel; saves the published ETAs."""
    lkeys = live.Keys(settings.redis_prefix)
    ekeys = Keys(settings.redis_prefix)

    async def push(fixes: list[Fix], redis: aioredis.Redis) -> list[tuple[str, bytes]]:
        newest: dict[int, Fix] = {}
        for f in fixes:
            if f.driver_id not in newest or newest[f.driver_id].ts < f.ts:
                newest[f.driver_id] = f
        pending = stage.pending if stage is not None else {}
        out = [(lkeys.driver(d), orjson.dumps(pending.get(d) or {"type": "update", **f.to_live()})) for d, f in newest.items()]
        if stage is not None and (stage.pending_eta or stage.pending_flags):
            pipe = redis.pipeline(transaction=False)
            if stage.pending_eta:
                pipe.hset(ekeys.eta, mapping=stage.pending_eta)
            if stage.pending_flags:
                pipe.sadd(ekeys.stop_events, *stage.pending_flags)
            await pipe.execute()
        return out

    return push


def coarse(lat: float, lng: float, *, resolution: int = 7) -> tuple[float, float]:
    """The centre of the H3 cell (res 7: ~1.2 km edge) around a point: what a customer sees of a far-away driver."""
    import h3

    if not (math.isfinite(lat) and math.isfinite(lng)):
        return lat, lng
    return h3.cell_to_latlng(h3.latlng_to_cell(lat, lng, resolution))
