"""Validation, fixed-prefix reduction, route scheduling and the feasibility checker.

Every search engine (PyVRP, OR-Tools, cheap insertion) only proposes *sequences* of
stops; this module turns a sequence into a schedule with the exact (float) problem
data, and independently checks a finished `Solution` against every constraint. Keeping
that in one place means the engines can round, scale and approximate as they like:
what we return is always re-timed and re-checked here, in the units the caller gave.

Fixed prefixes are handled by *reduction*: stops already started or committed are
history, so each such vehicle is replaced by one that starts where and when its prefix
ends, with the goods of half-done pickup-and-delivery pairs on board (as delivery jobs
tied to that vehicle). Every engine then sees a plain problem and cannot move the
prefix. The alternative, pinning the prefix inside each engine (OR-Tools `NextVar`
constraints), would have to be written once per engine and PyVRP has no such hook.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from routing.vrp_model import (
    INF,
    BreakVisit,
    Job,
    Problem,
    ProblemError,
    Route,
    Solution,
    Stop,
    StopRef,
    Vehicle,
    Visit,
)

EPS = 1e-6  # seconds / metres / load units of slack when comparing float schedules


# --------------------------------------------------------------------------- validation


def validate(problem: Problem) -> None:
    """Raise ProblemError with a readable message when the problem is malformed."""
    dur, dist = problem.duration_s, problem.distance_m
    if not isinstance(dur, np.ndarray) or not isinstance(dist, np.ndarray):
        raise ProblemError("duration_s and distance_m must be numpy arrays")
    if dur.ndim != 2 or dur.shape[0] != dur.shape[1] or dur.shape != dist.shape:
        raise ProblemError(
            f"matrices must be square and of equal shape, got {dur.shape} and {dist.shape}"
        )
    if np.isnan(dur).any() or np.isnan(dist).any():
        raise ProblemError("matrices contain NaN")
    if (dur < 0).any() or (dist < 0).any():
        raise ProblemError("matrices contain negative travel times or distances")
    if not problem.vehicles:
        raise ProblemError("the problem has no vehicles: nothing can be planned")
    if not isinstance(problem.wait_cost, (int, float)) or not math.isfinite(problem.wait_cost) or problem.wait_cost < 0:
        raise ProblemError(f"wait_cost must be a finite number >= 0, got {problem.wait_cost!r}")
    n_loc = dur.shape[0]
    n_dims = problem.n_dims

    def _loc(where: str, loc: int | None) -> None:
        if loc is None:
            return
        if not isinstance(loc, (int, np.integer)) or not 0 <= loc < n_loc:
            raise ProblemError(f"{where}: location {loc!r} is not a matrix index (0..{n_loc - 1})")

    seen: set[str] = set()
    for job in problem.jobs:
        if job.id in seen:
            raise ProblemError(f"duplicate job id {job.id!r}")
        seen.add(job.id)
        if job.pickup is None and job.delivery is None:
            raise ProblemError(f"job {job.id!r} has neither a pickup nor a delivery")
        for kind, stop in job.stops():
            _loc(f"job {job.id!r} {kind}", stop.location)
            if stop.service_s < 0 or math.isnan(stop.service_s):
                raise ProblemError(f"job {job.id!r}: negative service time")
        if any(a < 0 or math.isnan(a) for a in job.amount):
            raise ProblemError(f"job {job.id!r}: negative amount {job.amount}")
    vseen: set[str] = set()
    for v in problem.vehicles:
        if v.id in vseen:
            raise ProblemError(f"duplicate vehicle id {v.id!r}")
        vseen.add(v.id)
        _loc(f"vehicle {v.id!r} start", v.start_location)
        _loc(f"vehicle {v.id!r} end", v.end_location)
        if any(c < 0 for c in v.capacity):
            raise ProblemError(f"vehicle {v.id!r}: negative capacity {v.capacity}")
        if len(v.initial_load) > n_dims:
            raise ProblemError(f"vehicle {v.id!r}: initial_load has too many dimensions")


def _padt(values: tuple[float, ...], n: int, fill: float) -> tuple[float, ...]:
    """`pad` as a plain tuple, for the per-stop loops."""
    return tuple(values) + (fill,) * (n - len(values)) if len(values) < n else tuple(values)


SCALE = 1000  # integer units per caller unit in the engines (ms per s, mm per m)
BIG = 10**11  # scaled cost of a forbidden or unreachable arc: far above any real route


def scaled(values: np.ndarray, *, up: bool, cap: int = BIG) -> np.ndarray:
    """`values` × SCALE as int64 for the integer engines; inf and anything above `cap` become `cap`.

    `up` rounds times up (never promise an arrival the real drive cannot make; the 1e-6 absorbs
    float noise), distances to the nearest unit.
    """
    x = values * SCALE
    out = np.full(values.shape, cap, dtype=np.int64)
    finite = np.isfinite(x)
    out[finite] = np.ceil(x[finite] - 1e-6) if up else np.rint(x[finite])
    return np.minimum(out, cap)


def pad(values: tuple[float, ...], n: int, fill: float) -> np.ndarray:
    """A fixed-length load vector; a missing capacity dimension means unlimited."""
    out = np.full(n, fill, dtype=float)
    out[: len(values)] = values
    return out


# --------------------------------------------------------------------------- reduction


@dataclass(slots=True)
class Reduced:
    """A problem with every fixed prefix turned into history (see module docstring)."""

    problem: Problem  # vehicles start after their prefix; jobs exclude fully-fixed ones
    original: Problem
    prefix_visits: dict[str, list[Visit]]  # vehicle id -> scheduled prefix visits
    prefix_distance_m: dict[str, float]
    route_start_s: dict[str, float]  # vehicle id -> start of the whole route (prefix incl.)
    converted: set[str] = field(default_factory=set)  # pairs whose pickup is in a prefix


def reduce_prefixes(problem: Problem) -> Reduced:
    """Schedule every fixed prefix and return the remaining problem."""
    jobs = {j.id: j for j in problem.jobs}
    n_dims = problem.n_dims
    dur, dist = problem.duration_s, problem.distance_m
    done: dict[str, set[str]] = {}  # job id -> stop kinds inside some prefix
    owner: dict[str, str] = {}
    vehicles: list[Vehicle] = []
    prefix_visits: dict[str, list[Visit]] = {}
    prefix_distance: dict[str, float] = {}
    route_start: dict[str, float] = {}
    for v in problem.vehicles:
        route_start[v.id] = v.shift_s[0]
        if not v.fixed_prefix:
            vehicles.append(v)
            continue
        t = v.shift_s[0]
        loc = v.start_location
        load = pad(v.initial_load, n_dims, 0.0)
        visits: list[Visit] = []
        distance = 0.0
        for ref in v.fixed_prefix:
            ref = StopRef(ref) if isinstance(ref, str) else ref
            job = jobs.get(ref.job_id)
            if job is None:
                raise ProblemError(f"vehicle {v.id!r}: fixed prefix names unknown job {ref.job_id!r}")
            stop = job.pickup if ref.kind == "pickup" else job.delivery
            if stop is None:
                raise ProblemError(f"vehicle {v.id!r}: job {job.id!r} has no {ref.kind} stop")
            if ref.kind in done.get(job.id, set()):
                raise ProblemError(f"job {job.id!r} {ref.kind} appears in two fixed prefixes")
            if owner.get(job.id, v.id) != v.id:
                raise ProblemError(f"job {job.id!r} is split over two vehicles' prefixes")
            if ref.kind == "delivery" and job.kind == "pair" and "pickup" not in done.get(job.id, set()):
                raise ProblemError(f"job {job.id!r}: delivery fixed before its pickup")
            done.setdefault(job.id, set()).add(ref.kind)
            owner[job.id] = v.id
            arrival = t + float(dur[loc, stop.location])
            distance += float(dist[loc, stop.location])
            start = max(arrival, stop.time_window_s[0])
            t = start + stop.service_s
            loc = stop.location
            amount = pad(job.amount, n_dims, 0.0)
            if job.kind == "pickup" or ref.kind == "pickup":
                load = load + amount
            elif job.kind == "pair":
                load = load - amount
            visits.append(
                Visit(job.id, ref.kind, loc, arrival, start, t, tuple(load.tolist()), fixed=True)
            )
        prefix_visits[v.id] = visits
        prefix_distance[v.id] = distance
        # Goods on board after the prefix that stay to the end: the vehicle's initial load
        # plus fixed pickup-only jobs. Half-done pairs become delivery jobs (below), so
        # their amount is counted there, not here.
        on_board = pad(v.initial_load, n_dims, 0.0)
        for ref in v.fixed_prefix:
            ref = StopRef(ref) if isinstance(ref, str) else ref
            if jobs[ref.job_id].kind == "pickup":
                on_board = on_board + pad(jobs[ref.job_id].amount, n_dims, 0.0)
        elapsed = t - v.shift_s[0]
        vehicles.append(
            dataclasses.replace(
                v,
                start_location=loc,
                shift_s=(t, v.shift_s[1]),
                max_duration_s=v.max_duration_s - elapsed,
                breaks=tuple(
                    dataclasses.replace(b, earliest_start_s=max(b.earliest_start_s, t))
                    for b in v.breaks
                    if b.latest_start_s >= t
                ),
                fixed_prefix=(),
                initial_load=tuple(on_board.tolist()) if n_dims else (),
            )
        )
    remaining: list[Job] = []
    converted: set[str] = set()
    for job in problem.jobs:
        kinds = done.get(job.id, set())
        if not kinds:
            remaining.append(job)
        elif job.kind == "pair" and kinds == {"pickup"}:
            # Picked up, not yet delivered: the goods are on this vehicle now.
            remaining.append(
                dataclasses.replace(job, pickup=None, vehicles=frozenset({owner[job.id]}), skills=frozenset())
            )
            converted.add(job.id)
    reduced = Problem(dur, dist, vehicles, remaining, name=problem.name, wait_cost=problem.wait_cost)
    return Reduced(reduced, problem, prefix_visits, prefix_distance, route_start, converted)


# --------------------------------------------------------------------------- scheduling


@dataclass(slots=True)
class Schedule:
    """Timed result of driving one sequence with one vehicle; `violations` empty if feasible."""

    visits: list[Visit]
    breaks: list[BreakVisit]
    start_s: float
    end_s: float
    distance_m: float
    violations: list[str]
    first_bad: int | None = None  # index in the sequence of the first violating stop


def compatible(job: Job, vehicle: Vehicle) -> bool:
    if not job.skills <= vehicle.skills:
        return False
    return job.vehicles is None or vehicle.id in job.vehicles


def schedule_route(
    *,
    problem: Problem,
    vehicle: Vehicle,
    sequence: list[tuple[Job, str]],
    shift_start: bool = True,
) -> Schedule:
    """Time `sequence` (jobs with 'pickup'/'delivery') for `vehicle`; earliest service starts.

    With `shift_start`, the departure is then delayed as far as it can be without
    moving any service start, which minimises route duration (for max-duration and
    for honest driver shifts) — the classic forward-slack computation.
    """
    sched = _drive(problem, vehicle, sequence, vehicle.shift_s[0])
    if shift_start and sequence:
        # delta = min(total wait, min_k(wait up to k + latest_k - start_k)) keeps every
        # service start inside its window and does not move the route's end.
        waits = np.array([v.start_s - v.arrival_s for v in sched.visits])
        cum = np.cumsum(waits)
        lates = np.array([_stop(j, k).time_window_s[1] for j, k in sequence])
        starts = np.array([v.start_s for v in sched.visits])
        delta = float(min(cum[-1], np.min(cum + lates - starts)))
        if delta > EPS:
            later = _drive(problem, vehicle, sequence, vehicle.shift_s[0] + delta)
            if not later.violations or len(later.violations) < len(sched.violations):
                sched = later
    if sequence and vehicle.breaks and any(m.startswith("break") for m in sched.violations):
        # The greedy placement takes a break in the last leg where it still can; when
        # that leg has no room, an earlier one (with waiting time) may. Try each leg
        # for each break in turn: O(n) re-timings, only for routes that need it.
        for b in vehicle.breaks:
            for leg in range(len(sequence) + 1):
                forced = _drive(problem, vehicle, sequence, vehicle.shift_s[0], forced={b.id: leg})
                if not forced.violations:
                    return forced
    return sched


def _stop(job: Job, kind: str) -> Stop:
    stop = job.pickup if kind == "pickup" else job.delivery
    assert stop is not None
    return stop


def _drive(
    problem: Problem,
    vehicle: Vehicle,
    sequence: list[tuple[Job, str]],
    t0: float,
    forced: dict[str, int] | None = None,
) -> Schedule:
    # Plain Python floats and lists here, not numpy: this runs per candidate in
    # insertion, on 1-3 load dimensions, where numpy's per-call cost dominated
    # (16,000 np.full calls for five insertions into the live fleet).
    forced = forced or {}
    dur, dist = problem.duration_s, problem.distance_m
    # Dimensions this route can load (Problem.n_dims scans every job: too slow here).
    n_dims = max([len(vehicle.capacity), len(vehicle.initial_load)] + [len(j.amount) for j, _ in sequence])
    cap = _padt(vehicle.capacity, n_dims, INF)
    load = list(_padt(vehicle.initial_load, n_dims, 0.0))
    for job, kind in sequence:
        if job.kind == "delivery":
            load = [a + b for a, b in zip(load, _padt(job.amount, n_dims, 0.0))]
    violations: list[str] = []
    if any(a > c + EPS for a, c in zip(load, cap)):
        violations.append(f"load {load} at start exceeds capacity {list(cap)}")
    # A route that starts after a break's window needs no break.
    pending = sorted((b for b in vehicle.breaks if b.latest_start_s >= t0), key=lambda b: b.earliest_start_s)
    breaks: list[BreakVisit] = []
    t = t0
    loc = vehicle.start_location
    distance = 0.0
    visits: list[Visit] = []
    picked: set[str] = set()
    first_bad: int | None = 0 if violations else None
    for idx, (job, kind) in enumerate(sequence):
        stop = _stop(job, kind)
        travel = float(dur[loc, stop.location])
        arrival = t + travel
        early, late = stop.time_window_s
        start = max(arrival, early)
        # Take a pending break in this leg when the service would otherwise end after
        # the break's latest start (a break never interrupts a service, so after it
        # would be too late). Two placements are tried: before driving (the break
        # delays the arrival) and after driving (it uses the waiting time).
        while pending and (start + stop.service_s > pending[0].latest_start_s or forced.get(pending[0].id) == idx):
            b = pending.pop(0)
            options = []
            for b_start, arr in (
                (max(t, b.earliest_start_s), None),
                (max(arrival, b.earliest_start_s), arrival),
            ):
                if b_start <= b.latest_start_s + EPS:
                    new_arrival = b_start + b.duration_s + travel if arr is None else arrival
                    new_start = max(new_arrival, early, b_start + b.duration_s)
                    options.append((new_start, b_start, new_arrival))
            if not options:
                violations.append(f"break {b.id} cannot start by {b.latest_start_s}")
                continue
            start, b_start, arrival = min(options)
            breaks.append(BreakVisit(b.id, b_start, idx - 1))
            if arrival > b_start:  # taken before driving: the next break comes after it
                t = b_start + b.duration_s
        if math.isinf(travel):
            violations.append(f"{job.id} {kind}: location unreachable")
        if start > late + EPS:
            violations.append(f"{job.id} {kind}: service starts at {start:.3f} after window end {late}")
        distance += float(dist[loc, stop.location])
        amount = _padt(job.amount, n_dims, 0.0)
        if job.kind == "pickup" or kind == "pickup":
            load = [a + b for a, b in zip(load, amount)]
            if job.kind == "pair":
                picked.add(job.id)
        else:
            if job.kind == "pair" and job.id not in picked:
                violations.append(f"{job.id}: delivery before its pickup")
            load = [a - b for a, b in zip(load, amount)]
        if any(a > c + EPS for a, c in zip(load, cap)):
            violations.append(f"{job.id} {kind}: load {load} exceeds capacity {list(cap)}")
        if not compatible(job, vehicle):
            violations.append(f"{job.id}: vehicle {vehicle.id} lacks skills or is not allowed")
        if violations and first_bad is None:
            first_bad = idx
        t = start + stop.service_s
        loc = stop.location
        visits.append(Visit(job.id, kind, loc, arrival, start, t, tuple(load)))
    end = t
    if vehicle.end_location is not None:
        travel = float(dur[loc, vehicle.end_location])
        distance += float(dist[loc, vehicle.end_location])
        end = t + travel
    while pending and (end > pending[0].latest_start_s or forced.get(pending[0].id) == len(sequence)) and sequence:
        b = pending.pop(0)
        b_start = max(t, b.earliest_start_s)
        if b_start > b.latest_start_s + EPS:
            violations.append(f"break {b.id} cannot start by {b.latest_start_s}")
            continue
        breaks.append(BreakVisit(b.id, b_start, len(sequence) - 1))
        end = max(end, b_start + b.duration_s + (end - t))
        t = b_start + b.duration_s
    if end > vehicle.shift_s[1] + EPS:
        violations.append(f"route ends at {end:.3f} after shift end {vehicle.shift_s[1]}")
    if end - t0 > vehicle.max_duration_s + EPS:
        violations.append(f"route lasts {end - t0:.3f} > max {vehicle.max_duration_s}")
    if not sequence:
        end = t0
    if violations and first_bad is None:
        first_bad = len(sequence) - 1
    return Schedule(visits, breaks, t0, end, distance, violations, first_bad)


# --------------------------------------------------------------------------- assembly


def build_route(*, reduced: Reduced, vehicle: Vehicle, sequence: list[tuple[Job, str]]) -> tuple[Route, list[str]]:
    """Route for a reduced-problem vehicle, with its fixed prefix put back in front."""
    prefix = reduced.prefix_visits.get(vehicle.id, [])
    sched = schedule_route(problem=reduced.problem, vehicle=vehicle, sequence=sequence, shift_start=not prefix)
    offset = len(prefix)
    breaks = [BreakVisit(b.break_id, b.start_s, b.after_visit + offset) for b in sched.breaks]
    start = reduced.route_start_s[vehicle.id] if prefix else sched.start_s
    end = sched.end_s if sequence or not prefix else prefix[-1].departure_s
    if prefix and not sequence and vehicle.end_location is not None:
        end = prefix[-1].departure_s + float(reduced.problem.duration_s[vehicle.start_location, vehicle.end_location])
    distance = reduced.prefix_distance_m.get(vehicle.id, 0.0) + sched.distance_m
    return Route(vehicle.id, list(prefix) + sched.visits, start, end, distance, breaks), sched.violations


def churn(*, previous: Solution, current: Solution) -> float:
    """Share of jobs planned in both solutions whose vehicle changed (0.0 when none shared)."""
    before, after = previous.vehicle_of(), current.vehicle_of()
    shared = before.keys() & after.keys()
    if not shared:
        return 0.0
    return sum(1 for j in shared if before[j] != after[j]) / len(shared)


# --------------------------------------------------------------------------- checker


def check(problem: Problem, solution: Solution) -> list[str]:
    """Every violated constraint of `solution`, as readable strings (empty: feasible).

    Independent of the engines: it re-derives loads and validates the reported
    times rather than trusting them.
    """
    out: list[str] = []
    jobs = {j.id: j for j in problem.jobs}
    vehicles = {v.id: v for v in problem.vehicles}
    reduced = reduce_prefixes(problem)
    rvehicles = {v.id: v for v in reduced.problem.vehicles}
    rjobs = {j.id: j for j in reduced.problem.jobs}
    seen: dict[tuple[str, str], str] = {}
    used: set[str] = set()
    for route in solution.routes:
        if route.vehicle_id not in vehicles:
            out.append(f"route for unknown vehicle {route.vehicle_id}")
            continue
        if route.vehicle_id in used:
            out.append(f"vehicle {route.vehicle_id} has two routes")
        used.add(route.vehicle_id)
        for visit in route.visits:
            key = (visit.job_id, visit.kind)
            if visit.job_id not in jobs:
                out.append(f"unknown job {visit.job_id}")
            elif key in seen:
                out.append(f"{visit.job_id} {visit.kind} served twice")
            seen[key] = route.vehicle_id
    unassigned = {u.job_id for u in solution.unassigned}
    for job in problem.jobs:
        kinds = [k for k, _ in job.stops()]
        served = [k for k in kinds if (job.id, k) in seen]
        if served and job.id in unassigned:
            out.append(f"{job.id} is both served and unassigned")
        if not served and job.id not in unassigned:
            out.append(f"{job.id} silently dropped")
        if served and len(served) != len(kinds):
            out.append(f"{job.id}: only {served} of {kinds} served")
        if len({seen[(job.id, k)] for k in served}) > 1:
            out.append(f"{job.id}: pickup and delivery on different vehicles")
    for vid, v in vehicles.items():
        if v.fixed_prefix and vid not in used:
            out.append(f"vehicle {vid} has a fixed prefix but no route")
    dur, dist = problem.duration_s, problem.distance_m
    for route in solution.routes:
        v = vehicles.get(route.vehicle_id)
        if v is None:
            continue
        prefix = [StopRef(r) if isinstance(r, str) else r for r in v.fixed_prefix]
        got = [StopRef(x.job_id, x.kind) for x in route.visits[: len(prefix)]]
        if got != prefix:
            out.append(f"vehicle {v.id}: fixed prefix {prefix} changed to {got}")
        rv = rvehicles[v.id]
        suffix = route.visits[len(prefix):]
        # Loads, skills and order over the suffix, with the reduced semantics.
        seq = []
        for x in suffix:
            job = rjobs.get(x.job_id)
            if job is None:
                out.append(f"{x.job_id} is fixed elsewhere but served again")
                continue
            seq.append((job, x.kind if job.kind == "pair" else ("pickup" if job.kind == "pickup" else "delivery")))
        redo = _drive(reduced.problem, dataclasses.replace(rv, breaks=()), seq, rv.shift_s[0])
        out += [f"vehicle {v.id}: {m}" for m in redo.violations if "load" in m or "skills" in m or "before its pickup" in m]
        # Times: validate what the route reports.
        t = rv.shift_s[0] if prefix else route.start_s
        if not prefix and route.start_s < v.shift_s[0] - EPS:
            out.append(f"vehicle {v.id}: starts at {route.start_s} before shift {v.shift_s[0]}")
        loc = rv.start_location
        distance = reduced.prefix_distance_m.get(v.id, 0.0)
        legs: dict[int, float] = {}
        for b in route.breaks:
            legs[b.after_visit] = legs.get(b.after_visit, 0.0) + _break(v, b.break_id).duration_s
            brk = _break(v, b.break_id)
            if not brk.earliest_start_s - EPS <= b.start_s <= brk.latest_start_s + EPS:
                out.append(f"vehicle {v.id}: break {b.break_id} at {b.start_s} outside its window")
        for i, x in enumerate(suffix):
            stop = _stop(jobs[x.job_id], x.kind) if x.job_id in jobs else None
            if stop is None:
                continue
            k = i + len(prefix)
            need = t + float(dur[loc, stop.location])
            if (
                x.arrival_s < need - EPS
                or x.start_s < x.arrival_s - EPS
                or x.start_s < need + legs.get(k - 1, 0.0) - EPS
            ):
                out.append(f"vehicle {v.id}: {x.job_id} served at {x.start_s} but earliest is {need}")
            if x.start_s < stop.time_window_s[0] - EPS or x.start_s > stop.time_window_s[1] + EPS:
                out.append(f"vehicle {v.id}: {x.job_id} {x.kind} starts {x.start_s} outside {stop.time_window_s}")
            if x.departure_s < x.start_s + stop.service_s - EPS:
                out.append(f"vehicle {v.id}: {x.job_id} leaves before its service ends")
            distance += float(dist[loc, stop.location])
            t, loc = x.departure_s, stop.location
        if route.visits:
            t_end = t + legs.get(len(route.visits) - 1, 0.0)
            if v.end_location is not None:
                t_end += float(dur[loc, v.end_location])
                distance += float(dist[loc, v.end_location])
            if route.end_s < t_end - EPS:
                out.append(f"vehicle {v.id}: ends at {route.end_s} before it can ({t_end})")
        if route.end_s > v.shift_s[1] + EPS:
            out.append(f"vehicle {v.id}: ends at {route.end_s} after shift end {v.shift_s[1]}")
        if route.end_s - route.start_s > v.max_duration_s + EPS:
            out.append(f"vehicle {v.id}: lasts {route.end_s - route.start_s} > max {v.max_duration_s}")
        if abs(distance - route.distance_m) > 1e-6 * max(1.0, distance):
            out.append(f"vehicle {v.id}: reports distance {route.distance_m}, recomputed {distance}")
        for b in rv.breaks:
            if route.visits and route.end_s > b.latest_start_s + EPS and route.start_s < b.latest_start_s:
                if not any(x.break_id == b.id for x in route.breaks):
                    out.append(f"vehicle {v.id}: break {b.id} not taken")
        # A break must not overlap a service.
        for b in route.breaks:
            brk = _break(v, b.break_id)
            for x in route.visits:
                if b.start_s < x.departure_s - EPS and x.start_s < b.start_s + brk.duration_s - EPS and x.departure_s > x.start_s:
                    out.append(f"vehicle {v.id}: break {b.break_id} overlaps service of {x.job_id}")
    return out


def _break(vehicle: Vehicle, break_id: str):
    for b in vehicle.breaks:
        if b.id == break_id:
            return b
    raise ProblemError(f"vehicle {vehicle.id}: unknown break {break_id}")
