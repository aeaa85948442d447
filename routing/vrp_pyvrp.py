"""PyVRP engine: translate a (prefix-reduced) problem to PyVRP, solve, translate back.

PyVRP's iterated local search is the strongest search we measured on Solomon (see
docs/vrp.md) and its model covers most of ours: multi-dimensional loads, time windows,
service times, pickup-and-delivery shipments, several depots, shifts and maximum
duration, optional jobs with prizes, and warm starts. What it lacks we emulate or
leave to OR-Tools:

- open routes: a dummy end depot that every location reaches for free;
- skills / vehicle restrictions: one routing profile per distinct compatibility
  pattern, whose matrix makes forbidden stops unreachable (the checker re-verifies);
- breaks: not expressible, so `routing.vrp` sends problems with breaks to OR-Tools.

PyVRP works in integers, so times are scaled and rounded *up* (travel, service,
window starts) and window ends rounded down: an integer-feasible PyVRP schedule is
then feasible in the caller's float units, which is what `vrp_check` re-times.
"""

from __future__ import annotations

import math

import numpy as np
import pyvrp
import time

from routing.vrp_check import BIG, SCALE, compatible, pad, scaled
from routing.vrp_model import Job, Problem

MAX_PROFILE_CELLS = 30_000_000  # profiles x locations^2 above this: too much memory


class Deadline:
    """PyVRP stopping criterion on an absolute clock.

    PyVRP's MaxRuntime starts counting at its first call, i.e. *after* the initial
    construction (35-530 ms here): with it, a 1 s solve took up to 1.01 s and a
    0.2 s solve 0.22 s. Counting from the moment the budget was granted fixes that.
    """

    def __init__(self, budget_s: float):
        self._deadline = time.perf_counter() + budget_s

    def __call__(self, best_cost: int) -> bool:
        return time.perf_counter() >= self._deadline


class Unsupported(Exception):
    """The problem uses a feature this engine cannot express; use another engine."""


def _ceil(x: float) -> int:
    return int(math.ceil(x * SCALE - 1e-6))


def _floor(x: float) -> int:
    return int(math.floor(x * SCALE + 1e-6))


def solve(
    *,
    problem: Problem,
    job_ids: list[str],
    prizes: dict[str, int],
    time_limit_s: float,
    seed: int = 0,
    warm: dict[str, list[tuple[str, str]]] | None = None,
) -> dict[str, list[tuple[Job, str]]]:
    """Plan `job_ids` of `problem` (no prefixes, no breaks); vehicle id -> sequence.

    `prizes` maps a job id to its scaled prize when the job may be left out; a job
    without a prize is required. Jobs PyVRP leaves out are simply absent.
    """
    if any(v.breaks for v in problem.vehicles):
        raise Unsupported("breaks")
    if problem.wait_cost > 0:
        raise Unsupported("a cost per second of waiting (PyVRP's duration cost is per route, not per stop)")
    deadline = Deadline(time_limit_s)  # the budget includes building the model below
    jobs = {j.id: j for j in problem.jobs}
    plan = [jobs[i] for i in job_ids]
    n_dims = problem.n_dims
    dur, dist = problem.duration_s, problem.distance_m

    # Locations: depots (one per distinct start/end matrix index), the open-route
    # sink, then one location per job stop, so profiles can forbid a stop alone.
    depot_locs: list[int] = []
    for v in problem.vehicles:
        for loc in (v.start_location, v.end_location):
            if loc is not None and loc not in depot_locs:
                depot_locs.append(loc)
    sink = len(depot_locs)
    stop_locs: list[int] = []
    stop_of: list[tuple[Job, str]] = []
    for job in plan:
        for kind, stop in job.stops():
            stop_locs.append(stop.location)
            stop_of.append((job, kind))
    index = np.array(depot_locs + [depot_locs[0]] + stop_locs)
    base_dist = scaled(dist[np.ix_(index, index)], up=False)
    base_dur = scaled(dur[np.ix_(index, index)], up=True)
    for m in (base_dist, base_dur):
        m[:, sink] = 0  # anything reaches the open-route sink for free
        m[sink, :] = BIG
        np.fill_diagonal(m, 0)  # PyVRP insists; co-located stops are distinct locations here

    # Profiles: one per distinct pattern of allowed stops.
    first_stop = sink + 1
    masks: list[bytes] = []
    profile_of: list[int] = []
    restricted = any(j.skills or j.vehicles is not None for j in plan)
    for v in problem.vehicles:
        if restricted:
            mask = np.array([compatible(job, v) for job, _ in stop_of], dtype=bool).tobytes()
        else:
            mask = b""
        if mask not in masks:
            masks.append(mask)
        profile_of.append(masks.index(mask))
    if len(masks) * len(index) ** 2 > MAX_PROFILE_CELLS:
        raise Unsupported(f"{len(masks)} compatibility profiles over {len(index)} locations")
    dist_ms, dur_ms = [], []
    for mask in masks:
        d, t = base_dist, base_dur
        if mask:
            bad = first_stop + np.flatnonzero(~np.frombuffer(mask, dtype=bool))
            d, t = d.copy(), t.copy()
            d[:, bad] = BIG
            t[:, bad] = BIG
            np.fill_diagonal(d, 0)
            np.fill_diagonal(t, 0)
        dist_ms.append(d)
        dur_ms.append(t)

    locations = [pyvrp.Location(x=0.0, y=0.0) for _ in range(len(index))]
    depots = [pyvrp.Depot(location=i) for i in range(len(depot_locs) + 1)]

    def _tw(tw: tuple[float, float]) -> dict:
        out = {"tw_early": _ceil(tw[0]) if tw[0] > 0 else 0}
        if math.isfinite(tw[1]):
            out["tw_late"] = max(out["tw_early"], _floor(tw[1]))
        return out

    def _amount(job: Job) -> list[int]:
        return [_ceil(a) for a in pad(job.amount, n_dims, 0.0)]

    clients, shipments = [], []
    client_of: list[tuple[Job, str]] = []
    shipment_of: list[Job] = []
    loc = first_stop
    for job in plan:
        prize = prizes.get(job.id)
        opt = {"prize": prize, "required": False} if prize is not None else {"required": True}
        if job.kind == "pair":
            p, d = job.pickup, job.delivery
            assert p is not None and d is not None
            ptw, dtw = _tw(p.time_window_s), _tw(d.time_window_s)
            shipments.append(
                pyvrp.Shipment(
                    pickup_location=loc,
                    delivery_location=loc + 1,
                    pickup_tw_early=ptw["tw_early"],
                    pickup_service_duration=_ceil(p.service_s),
                    delivery_tw_early=dtw["tw_early"],
                    delivery_service_duration=_ceil(d.service_s),
                    amount=_amount(job),
                    **({"pickup_tw_late": ptw["tw_late"]} if "tw_late" in ptw else {}),
                    **({"delivery_tw_late": dtw["tw_late"]} if "tw_late" in dtw else {}),
                    **opt,
                )
            )
            shipment_of.append(job)
            loc += 2
        else:
            kind, stop = job.stops()[0]
            amounts = {"delivery" if kind == "delivery" else "pickup": _amount(job)}
            clients.append(
                pyvrp.Client(location=loc, service_duration=_ceil(stop.service_s), **amounts, **_tw(stop.time_window_s), **opt)
            )
            client_of.append((job, kind))
            loc += 1

    # Vehicle types: vehicles that differ in nothing PyVRP sees share a type.
    type_key: dict[tuple, int] = {}
    types: list[pyvrp.VehicleType] = []
    members: list[list[str]] = []
    type_of: dict[str, int] = {}
    for v, profile in zip(problem.vehicles, profile_of):
        cap = [(_floor(c) if math.isfinite(c) else 2**62) for c in pad(v.capacity, n_dims, math.inf)]
        init = [_ceil(a) for a in pad(v.initial_load, n_dims, 0.0)]
        kw: dict = {
            "capacity": cap,
            "start_depot": depot_locs.index(v.start_location),
            "end_depot": sink if v.end_location is None else depot_locs.index(v.end_location),
            "tw_early": _ceil(v.shift_s[0]) if v.shift_s[0] > 0 else 0,
            "profile": profile,
        }
        if n_dims and any(init):
            kw["initial_load"] = init
        if math.isfinite(v.shift_s[1]):
            kw["tw_late"] = _floor(v.shift_s[1])
        if math.isfinite(v.max_duration_s):
            kw["shift_duration"] = _floor(v.max_duration_s)
        key = tuple(sorted((k, tuple(x) if isinstance(x, list) else x) for k, x in kw.items()))
        if key not in type_key:
            type_key[key] = len(types)
            types.append(kw)
            members.append([])
        members[type_key[key]].append(v.id)
        type_of[v.id] = type_key[key]
    vehicle_types = [pyvrp.VehicleType(num_available=len(m), **kw) for kw, m in zip(types, members)]
    data = pyvrp.ProblemData(locations, clients, depots, vehicle_types, dist_ms, dur_ms, shipments=shipments)

    initial = None
    if warm:
        initial = _warm_start(data, warm, type_of, client_of, shipment_of)
    # The stop is checked between iterations: it overshoots by one iteration (a few
    # ms at 100 customers) plus, on a cold start, whatever PyVRP's construction takes
    # beyond the budget — routing.vrp only cold-starts when that clearly fits.
    result = pyvrp.solve(
        data,
        stop=deadline,
        seed=seed,
        collect_stats=False,
        initial_solution=initial,
    )
    best = result.best
    out: dict[str, list[tuple[Job, str]]] = {}
    free = {t: list(m) for t, m in enumerate(members)}
    for route in best.routes():
        seq: list[tuple[Job, str]] = []
        for act in route.schedule():
            if act.is_client():
                seq.append(client_of[act.idx])
            elif act.is_pickup():
                seq.append((shipment_of[act.idx], "pickup"))
            elif act.is_delivery():
                seq.append((shipment_of[act.idx], "delivery"))
        if not seq:
            continue
        vid = _pick_vehicle(free[route.vehicle_type()], seq, warm)
        out[vid] = seq
    return out


def _pick_vehicle(free: list[str], seq: list[tuple[Job, str]], warm: dict | None) -> str:
    """Among interchangeable vehicles, reuse the one that had most of these jobs (less churn)."""
    best, score = 0, -1
    if warm:
        ids = {j.id for j, _ in seq}
        for i, vid in enumerate(free):
            s = sum(1 for jid, _ in warm.get(vid, []) if jid in ids)
            if s > score:
                best, score = i, s
    return free.pop(best)


def _warm_start(data, warm, type_of, client_of, shipment_of):
    """A pyvrp.Solution from previous sequences; None if PyVRP refuses it."""
    client_idx = {(j.id, k): i for i, (j, k) in enumerate(client_of)}
    ship_idx = {j.id: i for i, j in enumerate(shipment_of)}
    routes = []
    for vid, seq in warm.items():
        acts = []
        for jid, kind in seq:
            if (jid, kind) in client_idx:
                acts.append(pyvrp.Activity(pyvrp.ActivityType.CLIENT, client_idx[(jid, kind)]))
            elif jid in ship_idx:
                t = pyvrp.ActivityType.PICKUP if kind == "pickup" else pyvrp.ActivityType.DELIVERY
                acts.append(pyvrp.Activity(t, ship_idx[jid]))
        if acts and vid in type_of:
            routes.append(pyvrp.Route(data, acts, type_of[vid]))
    try:
        return pyvrp.Solution(data, routes) if routes else None
    except (RuntimeError, ValueError):
        return None
