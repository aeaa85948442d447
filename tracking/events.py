"""What tracking publishes and consumes.

Published (through the outbox, in the same transaction as the batch's history rows):

    zone.entered / zone.exited / zone.dwell  {driver_id, zone_id, ts, detected_ts, inferred, distance_m}
    stop.arriving / stop.arrived             {driver_id, stop_id, order_id, ts, detected_ts, distance_m, ...}

Zone and stop events come from the geofence engine's per-driver state machine
(`geofence.hysteresis.DriverTracker`, hysteresis and dwell are its business), run by
`GeofenceStage` on every accepted, non-late fix. Tracker state lives in Redis
(`{prefix}tracking:geofence`, driver -> `to_state()` snapshot) so whichever ingest replica
gets a driver's next fix carries on. Event ids are derived from (driver, kind, zone/stop,
event time), so a batch that is re-processed after a crash cannot emit an event twice.
Zones are the active rows of `service_zones` (code = zone_id, kind), reloaded every
`ZONE_REFRESH_S`. Without the geofence package, `tracking.eta.EtaStage` emits simple
distance/ETA-based stop events instead and no zone events.

Consumed: `delivery.completed` {order_id, ts?} -> the order's tracking links expire after
the grace period (`handle_delivery_completed`, for a `core.consumer.Consumer`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from core import events
from core.settings import Settings
from tracking import eta, links, live
from tracking.validate import Fix

log = logging.getLogger("serena.tracking.events")

ZONE_REFRESH_S = 60.0
_NS = uuid.UUID("8f6c1e52-0c1b-4d7e-9a43-0f3a3c1d2b77")
DELIVERY_COMPLETED = "delivery.completed"


def event_id(driver_id: int, kind: str, subject: str, ts: float) -> uuid.UUID:
    """Deterministic id: the same detection can only be emitted once."""
    return uuid.uuid5(_NS, f"{driver_id}:{kind}:{subject}:{ts:.3f}")


class GeofenceStage:
    """Pipeline stage: per-driver geofence trackers over the service zones; events into the batch's outbox.

    The tracker snapshots are written back after the batch commits (`after_commit`), so a
    batch that fails to store leaves the state as it was and is replayed in full.
    """

    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis,
                 plans_from: eta.EtaStage | None = None) -> None:
        from geofence import hysteresis, zones

        self.plans_from = plans_from  # an ETA stage that runs first: the plans it read for the batch, not a second HMGET

        self.hysteresis = hysteresis
        self.zones = zones
        self.pool = pool
        self.redis = redis
        self.key = settings.redis_prefix + "tracking:geofence"
        self.live = live.LiveState(redis, settings.redis_prefix)  # for its one-argument HMGET
        self.plans = eta.Keys(settings.redis_prefix).plans
        self.index = zones.ZoneIndex()
        self.loaded_at = 0.0
        self.pending: dict[str, bytes] = {}
        # driver -> (the snapshot this replica last wrote, the tracker it came from). When Redis
        # still holds exactly that snapshot, the tracker is reused instead of rebuilt with
        # from_state (a tenth of ingest's CPU at 5,000 pings/s). Entries are taken out while a
        # batch runs and put back only after its commit, so a failed batch leaves none behind.
        self._trackers: dict[int, tuple[bytes, Any]] = {}
        self._trackers_index = self.index
        self._written: dict[int, tuple[bytes, Any]] = {}

    async def refresh_zones(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self.loaded_at < ZONE_REFRESH_S:
            return
        from shapely import wkb

        rows = await self.pool.fetch("SELECT code, kind, ST_AsBinary(area) AS area FROM service_zones WHERE active")
        index = self.zones.ZoneIndex()
        for r in rows:
            try:
                index.add(self.zones.Zone.from_geometry(zone_id=r["code"], geometry=wkb.loads(bytes(r["area"])), kind=r["kind"]))
            except self.zones.ZoneError as exc:
                log.warning("service zone %s skipped: %s", r["code"], exc)
        self.index = index
        self.loaded_at = time.monotonic()

    async def __call__(self, fixes: list[Fix]) -> list[events.NewEvent]:
        self.pending = {}
        self._written = {}
        fresh = sorted((f for f in fixes if not f.late), key=lambda f: (f.driver_id, f.ts))
        if not fresh:
            return []
        await self.refresh_zones()
        drivers = sorted({f.driver_id for f in fresh})
        keys = [str(d) for d in drivers]
        read_for, read = self.plans_from.batch_plans if self.plans_from is not None else (None, {})
        if read_for is fixes and all(d in read for d in drivers):
            plans = [read[d] for d in drivers]
        else:
            plans = await self.live.hmget(self.plans, keys)
        if len(self.index) == 0:
            # No zones at all: only drivers with a plan (a next stop to arrive at) need a tracker.
            planned = [(d, k, p) for d, k, p in zip(drivers, keys, plans, strict=True) if p]
            fresh = [f for f in fresh if any(f.driver_id == d for d, _, _ in planned)] if len(planned) < len(drivers) else fresh
            drivers, keys, plans = [d for d, _, _ in planned], [k for _, k, _ in planned], [p for _, _, p in planned]
            if not drivers:
                return []
        states = await self.live.hmget(self.key, keys)
        trackers: dict[int, Any] = {}
        next_stop: dict[int, dict | None] = {}
        H = self.hysteresis
        if self._trackers_index is not self.index:  # zones reloaded: trackers must point at the new index
            self._trackers, self._trackers_index = {}, self.index
        cache = self._trackers
        for d, st, plan in zip(drivers, states, plans, strict=True):
            t = None
            mine = cache.pop(d, None)
            if st and mine is not None and mine[0] == st:
                t = mine[1]  # Redis holds what this replica wrote last: no other replica moved this driver since
            elif st:
                try:
                    t = H.DriverTracker.from_state(orjson.loads(st), index=self.index)
                except (ValueError, KeyError):
                    t = None
            trackers[d] = t or H.DriverTracker(index=self.index, driver_id=str(d))
            stop = None
            if plan:
                stop = next((s for s in orjson.loads(plan)["stops"] if s.get("status", "pending") == "pending"), None)
            next_stop[d] = stop
            current = getattr(trackers[d], "_stop", None)
            if stop is None and current is not None:
                trackers[d].set_next_stop(None)
            elif stop is not None and (current is None or current.stop_id != str(stop["stop_id"])):
                trackers[d].set_next_stop(H.Stop(stop_id=str(stop["stop_id"]), lat_deg=float(stop["lat"]), lng_deg=float(stop["lng"])))
        out: list[events.NewEvent] = []
        for f in fresh:
            res = trackers[f.driver_id].update(ts_s=f.ts, lat_deg=f.lat, lng_deg=f.lng, accuracy_m=f.accuracy_m)
            for ev in res.events:
                subject = ev.zone_id or ev.stop_id or ""
                payload = {"driver_id": f.driver_id, "ts": ev.ts_s, "detected_ts": ev.detected_ts_s,
                           "inferred": ev.inferred, "distance_m": ev.distance_m}
                if ev.zone_id is not None:
                    payload["zone_id"] = ev.zone_id
                if ev.stop_id is not None:
                    payload["stop_id"] = ev.stop_id
                    stop = next_stop.get(f.driver_id) or {}
                    payload["order_id"] = stop.get("order_id")
                out.append(events.NewEvent(ev.kind, payload, aggregate="driver", aggregate_id=f.driver_id,
                                           event_id=event_id(f.driver_id, ev.kind, subject, ev.ts_s)))
        self._written = {d: (orjson.dumps(t.to_state()), t) for d, t in trackers.items()}
        self.pending = {str(d): w[0] for d, w in self._written.items()}
        return out

    async def after_commit(self) -> None:
        if self.pending:
            await self.redis.hset(self.key, mapping=self.pending)
            self._trackers.update(self._written)
            self.pending, self._written = {}, {}


def geofence_available() -> bool:
    try:
        from geofence import hysteresis, zones  # noqa: F401
    except ImportError:
        return False
    return True


async def handle_delivery_completed(db: Any, event: events.Event, *, grace_s: int) -> None:
    """Consumer handler: links of the delivered order expire `grace_s` after delivery (a delivery
    from the public API has no commerce order: its links name the job)."""
    order_id = str(event.payload.get("order_id") or event.payload.get("job_id") or "")
    if not order_id:
        return
    ts = event.payload.get("ts") or event.payload.get("completed_at")
    if isinstance(ts, int | float):
        at = dt.datetime.fromtimestamp(ts, dt.UTC)
    elif isinstance(ts, str):
        at = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    else:
        at = dt.datetime.now(dt.UTC)
    await links.mark_delivered(db, order_id=order_id, at=at, grace_s=grace_s)
