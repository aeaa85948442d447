"""The planner: one leader per region re-optimises open jobs over the on-duty fleet and publishes task lists.

Leadership is a lease in Redis (SET NX PX, renewed by compare-and-extend); a standby
replica takes over when the lease lapses. A plan is computed from the database (jobs,
shifts) and the live positions, solved by `routing.vrp` warm-started from the current
plan, and written in ONE transaction: the plan version, every job's driver/sequence/ETA,
the state transitions and their events. So a planner killed mid-re-plan leaves either
the old plan or the new one, never a mix, and a job has one driver column: it cannot be
assigned twice. Before committing, the leader checks it still holds the lease (fencing),
so a paused old leader cannot overwrite its successor's plan.

Jobs picked up by a van stay on that van (delivery-only jobs restricted to it); a stop in
progress (`arriving`) is the van's fixed prefix; jobs not yet picked up are
pickup-and-delivery pairs from their depot and may move between vans; a dispatcher's
reassignment pins a job to the chosen driver.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.models import Depot, Driver, Vehicle as VehicleRow
from core.settings import Settings
from dispatch import lifecycle, service, travel
from dispatch.models import DeliveryJob, JobState, Plan, Shift
from routing import vrp
from routing.vrp_model import Job, Problem, Solution, Stop, StopRef, Vehicle

log = logging.getLogger("serena.planner")
S = JobState

OPEN_STATES = [s.value for s in (S.CREATED, S.PLANNED, S.ASSIGNED, S.PICKED_UP, S.OUT_FOR_DELIVERY, S.ARRIVING, S.FAILED)]
ON_BOARD = {S.PICKED_UP.value, S.OUT_FOR_DELIVERY.value, S.ARRIVING.value, S.FAILED.value}
PICKUP_SERVICE_S = 60.0


def lease_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}planner:lease:{settings.dispatch_region}"


def tasks_channel(settings: Settings, driver_id: int) -> str:
    return f"{settings.redis_prefix}tasks:{driver_id}"


_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"


class Lease:
    """A renewable, fenced leadership lease in Redis."""

    def __init__(self, redis: aioredis.Redis, key: str, *, ttl_ms: int = 10_000, owner: str | None = None) -> None:
        self.redis, self.key, self.ttl_ms = redis, key, ttl_ms
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def acquire_or_renew(self) -> bool:
        if await self.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms))

    async def held(self) -> bool:
        value = await self.redis.get(self.key)
        return value is not None and value.decode() == self.owner

    async def release(self) -> None:
        await self.redis.eval(_RELEASE, 1, self.key, self.owner)


@dataclass
class Snapshot:
    """What a plan is computed from."""

    now: datetime
    jobs: list[DeliveryJob]
    drivers: list[tuple[Driver, Shift, VehicleRow | None]]
    depots: dict[int, Depot]
    positions: dict[int, tuple[float, float]]


@dataclass
class PlanResult:
    version: int | None
    solution: Solution | None  # None when skipped
    routes: dict[str, list[dict]]
    unassigned: dict[str, str]
    churn: float
    solve_ms: float
    published: dict[int, dict] = field(default_factory=dict)  # driver id -> task list
    inputs: str = ""  # fingerprint of what the plan was computed from, as it stands after the plan (inputs_fingerprint)
    skipped: bool = False  # nothing changed since the plan with the same `inputs`: no solve, nothing written
    changed: set[int] = field(default_factory=set)  # drivers whose list publish_tasks sent (content differed)


async def live_positions(redis: aioredis.Redis, settings: Settings, driver_ids: list[int]) -> dict[int, tuple[float, float, float]]:
    """Latest (lat, lng, ts unix s) per driver from the live state tracking keeps in Redis, where present."""
    from core import fleetstate

    out: dict[int, tuple[float, float, float]] = {}
    for driver_id, row in (await fleetstate.live_rows(redis, prefix=settings.redis_prefix, driver_ids=driver_ids)).items():
        try:
            ts = row["ts"]
            ts = datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else float(ts)
            out[driver_id] = (float(row["lat"]), float(row["lng"]), ts)
        except (KeyError, TypeError, ValueError):
            continue  # a live row without a usable position is the same as none
    return out


async def snapshot(db: AsyncSession, redis: aioredis.Redis, settings: Settings) -> Snapshot:
    now = datetime.now(UTC)
    jobs = list((await db.execute(select(DeliveryJob).where(DeliveryJob.state.in_(OPEN_STATES))
                                  .order_by(DeliveryJob.id))).scalars())
    rows = (await db.execute(select(Driver, Shift).join(Shift, Shift.driver_id == Driver.id)
                             .where(Shift.ended_at.is_(None), Driver.active.is_(True)).order_by(Driver.id))).all()
    vehicles = {v.id: v for v in (await db.execute(select(VehicleRow))).scalars()}
    depots = {d.id: d for d in (await db.execute(select(Depot))).scalars()}
    drivers = [(d, s, vehicles.get(s.vehicle_id or d.vehicle_id or -1)) for d, s in rows]
    live = await live_positions(redis, settings, [d.id for d, _, _ in drivers])
    positions: dict[int, tuple[float, float]] = {}
    for d, s, v in drivers:
        if d.id in live:
            positions[d.id] = live[d.id][:2]
        elif s.start_lat is not None:
            positions[d.id] = (s.start_lat, s.start_lng)
        else:
            depot = depots.get(d.depot_id or (v.depot_id if v else None) or -1) or next(iter(depots.values()), None)
            if depot is not None:
                positions[d.id] = service.latlng(depot.location)
    return Snapshot(now, jobs, drivers, depots, positions)


RELOAD = "reload:"  # id prefix of the synthetic depot stop that starts each van's next wave


def build_problem(snap: Snapshot, settings: Settings, model) -> tuple[Problem, list[tuple[float, float]]]:
    """The VRP for a snapshot; times are seconds after `snap.now`.

    Model (waves): a van first finishes what is on board, in its current order, then calls
    at its depot to load (a synthetic `reload:` stop), then delivers new jobs. Both the
    on-board deliveries and the reload are the van's fixed prefix, so the search only
    decides which new jobs each van takes and in what order. Rejected alternative: every
    new job as a pickup-and-delivery pair from the depot — exact for vans that reload
    several times, but it doubles the stops and the solver could not place 1,000 jobs in
    the 2 s budget (measured: 328 of 1,000 unassigned on Heidelberg).
    """
    points: list[tuple[float, float]] = []
    index: dict[tuple[float, float], int] = {}

    def loc(lat: float, lng: float) -> int:
        key = (round(lat, 6), round(lng, 6))
        if key not in index:
            index[key] = len(points)
            points.append(key)
        return index[key]

    t0 = snap.now
    horizon_s = settings.dispatch_shift_hours * 3600

    def rel(ts: datetime) -> float:
        return (ts - t0).total_seconds()

    def nearest_depot(lat: float, lng: float) -> Depot | None:
        if not snap.depots:
            return None
        return min(snap.depots.values(), key=lambda d: service.haversine_m(lat, lng, *service.latlng(d.location)))

    on_board: dict[int, list[DeliveryJob]] = {}
    for job in snap.jobs:
        if job.state in ON_BOARD and job.driver_id is not None:
            if job.state == S.FAILED.value and job.state_reason.startswith("return to depot"):
                continue  # goes back to the depot with its driver, not to a customer
            on_board.setdefault(job.driver_id, []).append(job)

    vehicles: list[Vehicle] = []
    jobs: list[Job] = []
    van_depot: dict[str, int | None] = {}
    loading: set[int] = set()  # vans that may be at their depot loading: what is on their list stays there
    for driver, shift, vrow in snap.drivers:
        if driver.id not in snap.positions:
            continue
        lat, lng = snap.positions[driver.id]
        depot = snap.depots.get(vrow.depot_id if vrow and vrow.depot_id else driver.depot_id or -1) or nearest_depot(lat, lng)
        prefix: list[StopRef] = []
        # What is on board, in the current order (the stop in progress first).
        for job in sorted(on_board.get(driver.id, []), key=lambda j: (j.state != S.ARRIVING.value, j.sequence or 0)):
            dlat, dlng = service.latlng(job.dropoff)
            window = (max(0.0, rel(job.window_start)), max(0.0, rel(job.window_end)))
            jobs.append(Job(id=str(job.id), delivery=Stop(location=loc(dlat, dlng), service_s=job.service_s, time_window_s=window),
                            amount=(job.weight_kg, job.volume_l, float(job.parcels)), vehicles=frozenset({str(driver.id)}),
                            priority=job.priority + 5))
            prefix.append(StopRef(str(job.id), "delivery"))
        if depot is not None:
            reload_id = f"{RELOAD}{driver.id}"
            jobs.append(Job(id=reload_id, pickup=Stop(location=loc(*service.latlng(depot.location)), service_s=300.0),
                            vehicles=frozenset({str(driver.id)}), priority=10))
            prefix.append(StopRef(reload_id, "pickup"))
        van_depot[str(driver.id)] = depot.id if depot is not None else None
        if not on_board.get(driver.id) or depot is None or service.haversine_m(
                lat, lng, *service.latlng(depot.location)) <= settings.dispatch_loading_radius_m:
            loading.add(driver.id)
        shift_end_s = max(rel(shift.started_at) + horizon_s, 1800.0)
        cap = (vrow.capacity_weight_kg, vrow.capacity_volume_l, float(vrow.capacity_parcels)) if vrow else (800.0, 6000.0, 120.0)
        vehicles.append(Vehicle(id=str(driver.id), start_location=loc(lat, lng), end_location=None, capacity=cap,
                                shift_s=(0.0, shift_end_s), skills=frozenset(vrow.skills or []) if vrow else frozenset(),
                                fixed_prefix=tuple(prefix)))

    vehicle_ids = {v.id for v in vehicles}
    for job in snap.jobs:
        if job.state not in (S.CREATED.value, S.PLANNED.value, S.ASSIGNED.value):
            continue
        dlat, dlng = service.latlng(job.dropoff)
        window = (max(0.0, rel(job.window_start)), max(0.0, rel(job.window_end)))
        if job.driver_id is not None and str(job.driver_id) in vehicle_ids and (
                job.state == S.CREATED.value or (job.state == S.ASSIGNED.value and job.driver_id in loading)):
            # Pinned: by a dispatcher (created + driver), or because it is on the list of a van
            # that may be loading it right now (empty, or near its depot): moving it then made
            # pickup scans fail (the simulator found 28 refused scans in 8 minutes). A van out
            # delivering has not loaded its next wave yet, so a re-plan may hand that wave's
            # parcels to an idle van (within the churn bound): pinning them all let a few vans
            # queue the whole backlog while the rest stood idle (5 of 15 vans drove in an hour).
            allowed = frozenset({str(job.driver_id)})
        elif job.depot_id is not None and len(snap.depots) > 1:
            allowed = frozenset(v for v, d in van_depot.items() if d == job.depot_id)  # loaded at its own depot
        else:
            allowed = None
        jobs.append(Job(id=str(job.id), delivery=Stop(location=loc(dlat, dlng), service_s=job.service_s, time_window_s=window),
                        amount=(job.weight_kg, job.volume_l, float(job.parcels)), skills=frozenset(job.skills or []),
                        vehicles=allowed, priority=job.priority))
    if not points:
        points.append((0.0, 0.0))
    lat = np.array([p[0] for p in points])
    lng = np.array([p[1] for p in points])
    time_s, dist_m = model.matrix(lat, lng)
    return Problem(duration_s=time_s, distance_m=dist_m, vehicles=vehicles, jobs=jobs, name=settings.dispatch_region,
                   wait_cost=settings.dispatch_wait_cost), points


def previous_solution(problem: Problem, snap: Snapshot) -> Solution | None:
    """The current plan (jobs' driver + sequence) as a Solution, to warm-start and measure churn."""
    ids = {j.id for j in problem.jobs}
    vehicle_ids = {v.id for v in problem.vehicles}
    seqs: dict[str, list[tuple[int, str]]] = {}
    for job in snap.jobs:
        if str(job.id) in ids and job.driver_id is not None and str(job.driver_id) in vehicle_ids and job.sequence is not None:
            seqs.setdefault(str(job.driver_id), []).append((job.sequence, str(job.id)))
    if not seqs:
        return None
    # Fixed prefixes (on-board stops, the reload) are the engine's business: it folds them into
    # the van's start, so the warm start lists only the free part of each route.
    prefixed = {r.job_id for v in problem.vehicles for r in v.fixed_prefix}
    routes = {v: [jid for _, jid in sorted(items) if jid not in prefixed] for v, items in seqs.items()}
    try:
        return vrp.solve_sequences(problem, routes=routes)
    except Exception as exc:  # an old plan that no longer fits (capacity, shift) is just not a warm start
        log.info("previous plan not usable as a warm start: %s", exc)
        return None


def stop_payload(job: DeliveryJob, kind: str, seq: int, eta: datetime) -> dict:
    lat, lng = service.latlng(job.dropoff if kind == "delivery" else job.pickup)
    return {
        "seq": seq, "job_id": str(job.id), "kind": kind, "package_code": job.package_code, "lat": lat, "lng": lng,
        "address": job.address if kind == "delivery" else "depot", "recipient_name": job.recipient_name if kind == "delivery" else "",
        "window_start": job.window_start.isoformat(), "window_end": job.window_end.isoformat(), "eta": eta.isoformat(),
        "state": job.state, "service_s": job.service_s, "idempotency_key": job.idempotency_key,
    }


async def apply_plan(db: AsyncSession, *, snap: Snapshot, problem: Problem, points: list[tuple[float, float]],
                     solution: Solution, reason: str, planner_id: str, region: str, solve_ms: float) -> PlanResult:
    """Write the plan and every job's new assignment, transitions and events (caller commits)."""
    jobs = {str(j.id): j for j in snap.jobs}
    routes_out: dict[str, list[dict]] = {}
    returning = {j.driver_id for j in snap.jobs if j.state == S.FAILED.value and j.state_reason.startswith("return to depot")}
    assigned: dict[str, tuple[int, int, datetime]] = {}  # job id -> (driver, seq of delivery, eta)
    for route in solution.routes:
        stops = []
        for seq, visit in enumerate(route.visits):
            eta = snap.now + timedelta(seconds=visit.arrival_s)
            if visit.job_id.startswith(RELOAD):
                lat, lng = points[visit.location]
                stops.append({"seq": seq, "job_id": None, "kind": "depot", "package_code": "", "lat": lat, "lng": lng,
                              "address": "depot: load the next wave", "eta": eta.isoformat(), "state": "planned"})
                continue
            job = jobs[visit.job_id]
            stops.append(stop_payload(job, visit.kind, seq, eta))
            if visit.kind == "delivery":
                assigned[visit.job_id] = (int(route.vehicle_id), seq, eta)
        for i, stop in enumerate(stops):  # the depot stop lists the parcels to load for the wave after it
            if stop["kind"] == "depot":
                stop["load"] = [x["package_code"] for x in stops[i + 1:] if x["kind"] == "delivery"
                                and x["state"] in (S.CREATED.value, S.PLANNED.value, S.ASSIGNED.value)]
        if stops and stops[-1]["kind"] == "depot" and not stops[-1]["load"] and int(route.vehicle_id) not in returning:
            # A last depot call loading nothing tells the driver nothing, and its ETA (now + the drive)
            # moves with the clock: kept, it made every idle driver's list "change" on every plan.
            # Kept when the van carries parcels back to the depot (failed, marked for return).
            stops.pop()
        routes_out[route.vehicle_id] = stops
    unassigned = {u.job_id: u.reason for u in solution.unassigned if not u.job_id.startswith(RELOAD)}
    plan = Plan(region=region, reason=reason, planner_id=planner_id, routes=routes_out, unassigned=unassigned,
                objective=float(solution.objective), churn=float(solution.churn or 0.0), solve_ms=solve_ms)
    db.add(plan)
    await db.flush()
    actor = "planner"
    for job_id, job in jobs.items():
        if job_id in assigned:
            driver_id, seq, eta = assigned[job_id]
            moved = job.driver_id != driver_id
            job.driver_id, job.sequence, job.eta, job.plan_version = driver_id, seq, eta, plan.version
            if job.state == S.CREATED.value:
                await lifecycle.transition(db, job=job, to=S.PLANNED, actor=actor, plan_version=plan.version)
            if job.state == S.PLANNED.value or (job.state == S.ASSIGNED.value and moved):
                if job.state == S.ASSIGNED.value:
                    await lifecycle.transition(db, job=job, to=S.PLANNED, actor=actor, reason="moved to another van")
                await lifecycle.transition(db, job=job, to=S.ASSIGNED, actor=actor, plan_version=plan.version,
                                           eta=eta.isoformat())
        elif job_id in unassigned and job.state in (S.PLANNED.value, S.ASSIGNED.value):
            await lifecycle.transition(db, job=job, to=S.CREATED, actor=actor, reason=f"not in plan: {unassigned[job_id]}")
            job.driver_id, job.sequence, job.eta = None, None, None
        elif job_id in unassigned and job.state == S.CREATED.value:
            job.state_reason = f"unassigned: {unassigned[job_id]}"
    published = {int(v): {"version": plan.version, "driver_id": int(v), "generated_at": snap.now.isoformat(), "stops": stops}
                 for v, stops in routes_out.items()}
    for driver, _, _ in snap.drivers:  # drivers with nothing to do get an empty list, not a stale one
        published.setdefault(driver.id, {"version": plan.version, "driver_id": driver.id,
                                          "generated_at": snap.now.isoformat(), "stops": []})
    return PlanResult(plan.version, solution, routes_out, unassigned, float(solution.churn or 0.0), solve_ms, published)


def solve(problem: Problem, previous: Solution | None, *, mode: str, time_limit_s: float,
          max_churn: float | None = None) -> Solution:
    """`full`: re-optimise, warm-started, moving at most `max_churn` of the stops to another van
    (drivers and customers hate a plan that reshuffles; measured: a free 5 s re-optimisation of the
    live fleet moves ~74 % of the stops for 5–7 % less distance); `insert`: keep every route and add
    new jobs by cheapest insertion (≤ 200 ms)."""
    if mode == "insert" and previous is not None:
        return vrp.insert(problem, plan=previous, time_limit_s=min(time_limit_s, 0.2))
    return vrp.solve(problem, time_limit_s=time_limit_s, previous=previous,
                     max_churn=max_churn if previous is not None else None)


def inputs_fingerprint(snap: Snapshot) -> str:
    """A digest of what decides who does which job: open jobs (state, driver, sequence, reason), drivers on
    duty with their shift and van, depots. Not positions, not the clock: those move all the time and only
    shift ETAs, which tracking's live ETA watch covers (a drift asks for a full re-plan)."""
    h = hashlib.blake2b(digest_size=16)
    for j in snap.jobs:
        h.update(f"j|{j.id}|{j.state}|{j.driver_id}|{j.sequence}|{j.attempts}|{j.state_reason}\n".encode())
    for d, s, v in snap.drivers:
        vehicle = (v.id, v.depot_id, v.capacity_weight_kg, v.capacity_volume_l, v.capacity_parcels, tuple(v.skills or ())) if v else None
        h.update(f"d|{d.id}|{d.depot_id}|{d.vehicle_id}|{s.id}|{s.vehicle_id}|{s.started_at}|{vehicle}\n".encode())
    for depot_id in sorted(snap.depots):
        h.update(f"p|{depot_id}|{service.latlng(snap.depots[depot_id].location)}\n".encode())
    return h.hexdigest()


def needs_solve(snap: Snapshot, *, inputs: str, unchanged_since: str | None) -> bool:
    """Whether an interval re-plan has anything to decide. It is skipped when the inputs are those the last
    published plan left behind AND no job is waiting or re-sequenceable (created/planned/assigned): with only
    on-board stops (a fixed order) or none at all, a solve could only restate the same lists."""
    if unchanged_since is None or inputs != unchanged_since:
        return True
    unstarted = {S.CREATED.value, S.PLANNED.value, S.ASSIGNED.value}
    return any(j.state in unstarted for j in snap.jobs)


async def replan(*, sessions: async_sessionmaker[AsyncSession], redis: aioredis.Redis, settings: Settings, lease: Lease | None,
                 reason: str, time_limit_s: float | None = None, model=None, mode: str = "full",
                 unchanged_since: str | None = None) -> PlanResult | None:
    """One re-plan of the region (`full` or `insert`); None when there is nothing to plan or the lease was lost.

    `unchanged_since`: the `inputs` of the last plan whose lists were published; when the region still
    looks like that (`needs_solve`), the result is `skipped` (no solve, no plan row, nothing to publish)."""
    model = model or travel.model_for(settings.dispatch_graph)
    async with sessions() as db, db.begin():
        snap = await snapshot(db, redis, settings)
        if not snap.jobs and not snap.drivers:
            return None
        inputs = inputs_fingerprint(snap)
        if not needs_solve(snap, inputs=inputs, unchanged_since=unchanged_since):
            return PlanResult(None, None, {}, {}, 0.0, 0.0, inputs=inputs, skipped=True)
        problem, points = build_problem(snap, settings, model)
        if not problem.vehicles:
            return None
        previous = previous_solution(problem, snap)
        t = time.perf_counter()
        solution = solve(problem, previous, mode=mode, time_limit_s=time_limit_s or settings.dispatch_time_limit_s,
                         max_churn=settings.dispatch_max_churn)
        solve_ms = (time.perf_counter() - t) * 1000
        if lease is not None and not await lease.held():
            log.warning("lease lost during re-plan; discarding the plan")
            await db.rollback()
            return None
        result = await apply_plan(db, snap=snap, problem=problem, points=points, solution=solution, reason=f"{mode}:{reason}",
                                  planner_id=lease.owner if lease else "manual", region=settings.dispatch_region,
                                  solve_ms=solve_ms)
        result.inputs = inputs_fingerprint(snap)  # the jobs as this plan leaves them: what the next snapshot reads
    log.info("plan v%s (%s): %d routes, %d unassigned, churn %.1f%%, solved in %.0f ms", result.version, reason,
             len(result.routes), len(result.unassigned), 100 * result.churn, solve_ms)
    return result


def order_id_of(stop: dict) -> str | None:
    """What a customer's tracking link names for a stop: the commerce order behind it (jobs from
    `order.paid` carry `order:{id}` as idempotency key), else the delivery itself (the delivery
    API's customer tracks the job id); None for a depot call. Without the fallback, links issued
    for API deliveries never found their driver: the simulator's watchers saw only `scheduled`."""
    key = stop.get("idempotency_key") or ""
    if key.startswith("order:"):
        return key.split(":", 1)[1]
    return str(stop["job_id"]) if stop.get("job_id") else None


def _same_list(new: dict, old: dict | None) -> bool:
    """Same task list for the driver, whatever the plan version and generation time."""
    return old is not None and old.get("driver_id") == new["driver_id"] and old.get("stops") == json.loads(json.dumps(new["stops"]))


async def publish_tasks(result: PlanResult, *, redis: aioredis.Redis, settings: Settings, mqtt_client=None,
                        force: bool = False) -> set[int]:
    """Task lists out, for the drivers whose list changed: MQTT retained per driver (QoS 1), Redis
    pub/sub for WebSockets, the driver-plan projection tracking reads for ETAs and stop detection
    (docs/tracking.md), and last `{prefix}tasks:last:{id}` (GET /v1/driver/tasks).

    A list equal to the stored one (same stops; version and generation time aside) is not sent again
    and keeps its version: `result.published` gets the stored document back. Before, every plan sent
    every on-duty driver's list (1,000 idle drivers: ~100k lists in 10 minutes, each parsed by an app).
    The stored copy is written last, so a publication cut short is found different and sent again by
    the next plan. `force` sends every list (a new leader cannot know the broker kept its retained
    messages), still under the stored version when unchanged. Returns the drivers whose list changed.
    """
    from core import fleetstate, mqtt

    if not result.published:
        return set()
    ids = list(result.published)
    stored = await redis.mget([f"{settings.redis_prefix}tasks:last:{d}" for d in ids])
    changed: set[int] = set()
    for driver_id, raw in zip(ids, stored, strict=True):
        old = json.loads(raw) if raw else None
        if _same_list(result.published[driver_id], old):
            result.published[driver_id] = old
            if not force:
                continue
        else:
            changed.add(driver_id)
        tasks = result.published[driver_id]
        body = json.dumps(tasks)
        if mqtt_client is not None:
            await mqtt_client.publish(mqtt.driver_topic(driver_id, "tasks", root=settings.mqtt_topic_root), body.encode(),
                                      qos=1, retain=True)
        await redis.publish(tasks_channel(settings, driver_id), body)
        stops = [{"stop_id": s["job_id"], "order_id": order_id_of(s), "lat": s["lat"], "lng": s["lng"],
                  "service_s": s.get("service_s", 120.0), "status": "pending"}
                 for s in tasks["stops"] if s["kind"] == "delivery"]
        await fleetstate.write_plan(redis, prefix=settings.redis_prefix, driver_id=driver_id, stops=stops,
                                    version=tasks["version"])
        await redis.set(f"{settings.redis_prefix}tasks:last:{driver_id}", body)
    result.changed = changed
    return changed
