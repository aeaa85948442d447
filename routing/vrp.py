"""Vehicle routing: plan jobs onto vehicles over travel-time and distance matrices.

This is the engine the dispatch planner calls. `solve` plans from scratch or warm
from a previous plan within a hard time limit; `insert` adds new jobs to a live plan
by cheapest feasible insertion in milliseconds (improve it afterwards with `solve`
and `previous=`); `check` independently verifies any plan. The search engines
(PyVRP by default, OR-Tools for breaks and as a fallback) only propose stop
sequences: this module removes what cannot be served before the search (with the
reason), re-times every route with the exact data, repairs anything an engine got
wrong, and reports every unserved job with a reason — never silently.

Design notes and measurements: docs/vrp.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np

from routing import vrp_greedy, vrp_ortools, vrp_pyvrp
from routing.vrp_check import (
    Reduced,
    build_route,
    check,
    churn,
    compatible,
    pad,
    reduce_prefixes,
    schedule_route,
    validate,
)
from routing.vrp_model import (
    INF,
    Break,
    Job,
    Problem,
    ProblemError,
    Route,
    Solution,
    Stop,
    StopRef,
    Unassigned,
    Vehicle,
    Visit,
)

__all__ = [
    "Break",
    "Job",
    "Problem",
    "ProblemError",
    "Route",
    "Solution",
    "Stop",
    "StopRef",
    "Unassigned",
    "Vehicle",
    "Visit",
    "check",
    "churn",
    "insert",
    "solve",
]

ENGINES = ("auto", "pyvrp", "ortools", "hybrid")

REASON_NO_ROOM = "no vehicle had room for it (capacity, time windows, shifts) in the plan found within the time limit"
REASON_REPAIR = "dropped: the engine's route broke a constraint when re-timed exactly"

# Share of a hybrid solve given to PyVRP before OR-Tools polishes from its result.
HYBRID_PYVRP_SHARE = 0.8
# With breaks: share given to PyVRP on the problem without breaks, as OR-Tools' start.
BREAKS_PYVRP_SHARE = 0.5


def _check_limit(time_limit_s: float) -> None:
    if not isinstance(time_limit_s, (int, float)) or math.isnan(time_limit_s) or time_limit_s <= 0:
        raise ProblemError(f"time limit must be a positive number of seconds, got {time_limit_s!r}")
    if math.isinf(time_limit_s):
        raise ProblemError("time limit must be finite: solves always stop")


def solve(
    problem: Problem,
    *,
    time_limit_s: float,
    previous: Solution | None = None,
    engine: str = "auto",
    seed: int = 0,
    keep_vehicles: bool = False,
    max_churn: float | None = None,
) -> Solution:
    """Plan every job of `problem` within `time_limit_s` seconds of wall time.

    `previous` (a plan for an earlier version of the problem) warm-starts the search
    and is the reference for `Solution.churn`. With `keep_vehicles=True` every job
    planned in `previous` stays on its vehicle (churn 0): new jobs are inserted, then
    each route is re-sequenced on its own. With `max_churn` (a share, e.g. 0.1) the
    search moves jobs between a few neighbouring routes at a time and accepts a move
    only while the plan's churn stays within it. Fixed prefixes never move. Raises
    ProblemError for malformed input (no vehicles, bad shapes, non-positive limit).
    """
    t_start = time.perf_counter()
    _check_limit(time_limit_s)
    if engine not in ENGINES:
        raise ProblemError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    deadline = t_start + time_limit_s
    validate(problem)
    reduced = reduce_prefixes(problem)
    rp = reduced.problem
    reasons = prechecks(rp)
    plan_ids = [j.id for j in rp.jobs if j.id not in reasons]
    prizes = _prizes(rp, plan_ids)
    warm = _warm(reduced, previous) if previous is not None else None

    # Keep back what re-timing and assembling the result costs (measured: about 10 us
    # per stop plus a few ms) so the whole call, not just the search, meets the limit.
    # Engines stop between iterations, so they overshoot by one iteration; a loaded
    # machine stretches that, hence the proportional part (measured: docs/vrp.md).
    # The work before the search (validation, prechecks) scales with the problem and
    # with the machine's load much like the re-timing after it, so it sets a floor.
    prep_s = time.perf_counter() - t_start
    # Capped at half the limit: under heavy load (load average 15 on 2 cores) a
    # stalled preparation otherwise left nothing to search with.
    reserve_s = min(
        max(0.01 + 8e-5 * len(plan_ids) + 0.002 * len(problem.vehicles) ** 0.5, 1.5 * prep_s),
        0.5 * time_limit_s,
    )
    budget_s = (deadline - time.perf_counter() - reserve_s) * 0.98
    seqs: dict[str, list[tuple[Job, str]]] = {}
    used = engine
    if warm and budget_s > 0:
        # Warm start = the previous plan plus the new jobs by cheapest insertion (at most
        # 30 % of the budget): a short re-optimisation then can never end with fewer
        # jobs served than `insert` would give (measured: 0.8 jobs left out per 0.2 s
        # warm solve on the live fleet without this).
        t0 = time.perf_counter()
        warm = _warm_with_insertions(rp, warm, plan_ids, t0 + 0.3 * budget_s)
        budget_s -= time.perf_counter() - t0
    if keep_vehicles and warm and budget_s > 0 and not any(v.breaks for v in rp.vehicles):
        seqs, used = _resequence(rp, warm, prizes, budget_s, seed), "per-route"
    elif max_churn is not None and warm and budget_s > 0 and not any(v.breaks for v in rp.vehicles):
        seqs, used = _bounded(rp, warm, prizes, budget_s, seed, max_churn, previous.vehicle_of()), "bounded-churn"
    elif plan_ids and budget_s > 0:
        seqs, used = _search(rp, plan_ids, prizes, budget_s, seed, warm, engine)
    elif plan_ids:
        reasons.update({jid: f"time limit of {time_limit_s:g} s too short to search" for jid in plan_ids})
    return _assemble(problem, reduced, seqs, reasons, used, previous, t_start)


def _resequence(rp: Problem, warm: dict, prizes: dict, budget_s: float, seed: int) -> dict:
    """Improve each route alone (same vehicle, same jobs): churn 0 by construction.

    The planner asked for improvement without reshuffles: a free re-optimisation of
    the live fleet moved 70-82 % of the stops for 4-24 % less distance. Per-vehicle
    assignment costs would allow a bounded trade-off, but PyVRP has them only as one
    profile matrix per vehicle (hundreds of MB at 50 vans x 1,000 stops) and OR-Tools
    only through per-vehicle arc costs; re-sequencing each route with PyVRP is cheap
    (20-stop problems) and keeps every job where the driver expects it.
    """
    deadline = time.perf_counter() + budget_s
    jobs = {j.id: j for j in rp.jobs}
    vehicles = {v.id: v for v in rp.vehicles}
    current = {vid: [(jobs[j], k) for j, k in seq] for vid, seq in warm.items() if vid in vehicles}
    total = sum(len(seq) for seq in current.values()) or 1
    out = dict(current)
    for vid, seq in sorted(current.items(), key=lambda kv: -len(kv[1])):
        left = deadline - time.perf_counter()
        if left <= 0.005:
            break
        if len(seq) < 3:
            continue
        ids = list(dict.fromkeys(j.id for j, _ in seq))
        sub = dataclasses.replace(rp, vehicles=[vehicles[vid]], jobs=[jobs[i] for i in ids])
        share = min(left, budget_s * len(seq) / total)
        try:
            new = _sub_solve(
                sub, ids, {i: prizes[i] for i in ids if i in prizes}, share, seed, {vid: [(j.id, k) for j, k in seq]}
            )
        except vrp_pyvrp.Unsupported:
            continue
        if new.get(vid):
            out[vid] = _better(rp, {vid: seq}, {vid: new[vid]})[vid]
    return out


def _sub_solve(sub: Problem, ids: list[str], prizes: dict, time_limit_s: float, seed: int, warm: dict) -> dict:
    """One small sub-problem: PyVRP for distance alone, OR-Tools when waiting has a cost
    (PyVRP has no per-stop time cost: its duration cost is per route, which does not
    tell a long queue from several short ones)."""
    if sub.wait_cost > 0:
        return vrp_ortools.solve(problem=sub, job_ids=ids, prizes=prizes, time_limit_s=time_limit_s, seed=seed, warm=warm)
    return vrp_pyvrp.solve(problem=sub, job_ids=ids, prizes=prizes, time_limit_s=time_limit_s, seed=seed, warm=warm)


def _bounded(rp: Problem, warm: dict, prizes: dict, budget_s: float, seed: int, max_churn: float, before: dict) -> dict:
    """Improve the warm plan a few neighbouring routes at a time, keeping churn <= max_churn.

    Decomposition (POPMUSIC-style): pick a route, add the three whose medoid stops are
    nearest, let PyVRP re-plan just those vehicles and jobs from their current routes,
    and keep the result if it is cheaper (`_plan_cost`), serves as many jobs and the whole
    plan's churn (against `before`) stays within the bound. Each sub-problem is small
    (~40-80 stops), so PyVRP's fixed costs stay a few milliseconds. When waiting has a
    cost, the two vehicles with nothing to do whose start is nearest join the group: an
    idle van can only take work over if some sub-problem contains it.
    """
    import random

    deadline = time.perf_counter() + budget_s
    rng = random.Random(seed)
    jobs = {j.id: j for j in rp.jobs}
    vehicles = {v.id: v for v in rp.vehicles}
    seqs = {vid: [(jobs[j], k) for j, k in seq] for vid, seq in warm.items() if vid in vehicles}
    dist = rp.distance_m
    shared = [j for j in before if j in jobs]

    def loc(j: Job, k: str) -> int:
        return (j.pickup if k == "pickup" else j.delivery).location

    def churn_of(plan: dict) -> float:
        now = {j.id: vid for vid, seq in plan.items() for j, _ in seq}
        return sum(1 for j in shared if now.get(j, before[j]) != before[j]) / max(len(shared), 1)

    idle_ok = rp.wait_cost > 0
    while time.perf_counter() < deadline - 0.01:
        routes = [vid for vid, seq in seqs.items() if seq]
        idle = [vid for vid in vehicles if not seqs.get(vid)] if idle_ok else []
        if len(routes) + min(len(idle), 1) < 2:
            break
        medoid = {}
        for vid in routes:
            locs = np.array([loc(j, k) for j, k in seqs[vid]])
            medoid[vid] = int(locs[np.argmin(dist[np.ix_(locs, locs)].sum(axis=1))])
        pivot = rng.choice(routes)
        near = sorted(routes, key=lambda v: dist[medoid[pivot], medoid[v]] + dist[medoid[v], medoid[pivot]])[:4]
        m = medoid[pivot]
        near += sorted(idle, key=lambda v: dist[vehicles[v].start_location, m])[:2]
        group = {vid: seqs.get(vid, []) for vid in near}
        ids = list(dict.fromkeys(j.id for seq in group.values() for j, _ in seq))
        sub_jobs = [jobs[i] for i in ids]
        if max_churn < 1.0 and shared:
            # Only as many jobs may change van as the churn bound still allows: the rest are pinned
            # to their van in this sub-problem, and the free ones are the last of each queue (they
            # wait longest). Unrestricted, a sub-solution moved half the jobs and was always refused.
            now_of = {j.id: vid for vid, seq in group.items() for j, _ in seq}
            cur = {j.id: vid for vid, seq in seqs.items() for j, _ in seq}
            moved = sum(1 for j in shared if cur.get(j, before[j]) != before[j])  # as churn_of counts
            room = max(0, int(max_churn * len(shared) + 1e-9) - moved)
            home = [(pos, jid) for vid, seq in group.items() for pos, (j, _) in enumerate(seq)
                    if (jid := j.id) in before and before[jid] == vid and not (j.vehicles and len(j.vehicles) == 1)]
            if len(home) > room:
                free = {jid for _, jid in sorted(home, reverse=True)[:room]}
                pinned = {jid for _, jid in home} - free
                sub_jobs = [dataclasses.replace(j, vehicles=frozenset({now_of[j.id]})) if j.id in pinned else j
                            for j in sub_jobs]
        sub = dataclasses.replace(rp, vehicles=[vehicles[v] for v in near], jobs=sub_jobs)
        left = deadline - time.perf_counter()
        try:
            new = _sub_solve(
                sub, ids, {i: prizes[i] for i in ids if i in prizes},
                # OR-Tools overshoots short limits (~0.1 s; docs/vrp.md): leave it room before the deadline.
                min(left * (0.6 if rp.wait_cost > 0 else 1.0), max(0.05, 0.004 * len(ids))), rng.randrange(1 << 30),
                {v: [(j.id, k) for j, k in seq] for v, seq in group.items() if seq},
            )
        except vrp_pyvrp.Unsupported:
            break
        new = {vid: [(jobs[j.id], k) for j, k in seq] for vid, seq in new.items()}  # the real jobs, not pinned copies
        if sum(len(x) for x in new.values()) < sum(len(x) for x in group.values()):
            continue
        trial = dict(seqs)
        for vid in near:
            trial[vid] = new.get(vid, [])
        # Only the group's routes differ between the two plans: compare those (each costs a re-timing).
        cheaper = _plan_cost(rp, {v: trial[v] for v in near}) < _plan_cost(rp, {v: seqs.get(v, []) for v in near}) - 1e-9
        if cheaper and churn_of(trial) <= max_churn + 1e-12:
            seqs = trial
    return {vid: seq for vid, seq in seqs.items() if seq}


def _construction_s(n_stops: int) -> float:
    """PyVRP's uninterruptible construction time, measured on the shared 2-core dev
    machine: 15-65 ms at 100 Solomon customers, 0.31-0.53 s at 450 live stops."""
    return 5e-5 * n_stops**1.5


def _warm_with_insertions(rp: Problem, warm: dict, plan_ids: list[str], deadline: float) -> dict:
    jobs = {j.id: j for j in rp.jobs}
    vehicles = {v.id: v for v in rp.vehicles}
    seqs = {vid: [(jobs[jid], kind) for jid, kind in seq] for vid, seq in warm.items() if vid in vehicles}
    placed = {jid for seq in warm.values() for jid, _ in seq}
    cache: dict = {}
    for jid in sorted((j for j in plan_ids if j not in placed), key=lambda j: -jobs[j].priority):
        if time.perf_counter() > deadline:
            break
        _insert_one(rp, vehicles, seqs, jobs[jid], deadline, cache)
    return {vid: [(j.id, k) for j, k in seq] for vid, seq in seqs.items()}


def _search(rp, plan_ids, prizes, budget_s, seed, warm, engine):
    has_breaks = any(v.breaks for v in rp.vehicles)
    t0 = time.perf_counter()
    n_stops = sum(len(j.stops()) for j in rp.jobs)
    greedy = None
    # With breaks too: PyVRP solves the relaxation. Not with a waiting cost (no per-stop time cost in PyVRP).
    uses_pyvrp = engine != "ortools" and rp.wait_cost == 0
    construction_s = _construction_s(n_stops)
    if rp.wait_cost > 0 and not has_breaks and budget_s < 0.0025 * n_stops:
        # Waiting priced (OR-Tools only) and the whole problem too large for its model and first
        # solution in the budget (1,000 stops: a 1.5 s solve took 2.7 s): start from the warm plan
        # or our greedy one, then improve a few routes at a time — each sub-problem also gets the
        # idle vans nearest to it, which is how work spreads (the greedy fills vans one by one).
        if not warm:
            greedy = vrp_greedy.construct(problem=rp, job_ids=plan_ids)
            warm = {vid: [(j.id, k) for j, k in seq] for vid, seq in greedy.items()}
            budget_s -= time.perf_counter() - t0
        if budget_s > 0.05:
            return _bounded(rp, warm, prizes, budget_s, seed, 1.0, {}), "decomposition"
        jobs = {j.id: j for j in rp.jobs}
        return {vid: [(jobs[j], k) for j, k in seq] for vid, seq in warm.items()}, "insertion"
    if warm and uses_pyvrp and budget_s < construction_s:
        # Even warm, PyVRP has fixed costs it cannot interrupt on the whole problem
        # (neighbour lists: 45 ms at 450 stops on an idle machine, 3x that under load):
        # 0.2 s warm solves of the live fleet took up to 0.33 s. Below its construction
        # time, improve the warm plan (previous + cheapest insertions) a few neighbouring
        # routes at a time instead, where those costs are milliseconds (1,050 stops, 2 s:
        # -1.9 % distance, churn 15 %, where the whole-problem search was not possible).
        if not has_breaks and budget_s > 0.05:
            return _bounded(rp, warm, prizes, budget_s, seed, 1.0, {}), "decomposition"
        jobs = {j.id: j for j in rp.jobs}
        return {vid: [(jobs[j], k) for j, k in seq] for vid, seq in warm.items()}, "insertion"
    if not warm and (
        (uses_pyvrp and budget_s < 2 * construction_s)
        # OR-Tools: model + LOCAL_CHEAPEST_INSERTION measured at ~0.06 s for 100 stops
        # and 0.5-1 s for 450; a greedy warm start at 1 s made GLS worse (8.5 % vs 2 %).
        or (not uses_pyvrp and budget_s < 0.0025 * n_stops)
    ):
        # Too little time for the engine's own first solution (PyVRP's cannot be
        # interrupted; OR-Tools' returns nothing when cut short): start from ours.
        # PyVRP's first local search from it is as uninterruptible as its own
        # construction, so it only runs when that clearly fits too.
        greedy = vrp_greedy.construct(problem=rp, job_ids=plan_ids)
        warm = {vid: [(j.id, k) for j, k in seq] for vid, seq in greedy.items()}
        budget_s -= time.perf_counter() - t0
        if budget_s < 0.01 or (uses_pyvrp and budget_s < 1.5 * construction_s):
            return greedy, "greedy"
    seqs, used = _engines(rp, plan_ids, prizes, budget_s, seed, warm, engine, has_breaks)
    if greedy is not None:
        return _better(rp, seqs, greedy) if seqs else greedy, f"greedy+{used}"
    return seqs, used


def _engines(rp, plan_ids, prizes, budget_s, seed, warm, engine, has_breaks):
    if engine in ("auto", "pyvrp", "hybrid") and not has_breaks:
        share = HYBRID_PYVRP_SHARE if engine == "hybrid" else 1.0
        try:
            t0 = time.perf_counter()
            seqs = vrp_pyvrp.solve(
                problem=rp, job_ids=plan_ids, prizes=prizes, time_limit_s=budget_s * share, seed=seed, warm=warm
            )
        except vrp_pyvrp.Unsupported:
            if engine == "pyvrp":
                raise ProblemError("the pyvrp engine cannot express this problem") from None
        else:
            if engine != "hybrid":
                return seqs, "pyvrp"
            left = budget_s - (time.perf_counter() - t0)
            if left <= 0.05:
                return seqs, "pyvrp"
            warm = {vid: [(j.id, k) for j, k in seq] for vid, seq in seqs.items()}
            polished = vrp_ortools.solve(
                problem=rp, job_ids=plan_ids, prizes=prizes, time_limit_s=left, seed=seed, warm=warm
            )
            return _better(rp, seqs, polished), "pyvrp+ortools"
    elif engine == "pyvrp":
        raise ProblemError("the pyvrp engine cannot express driver breaks; use engine='ortools'")
    if has_breaks and engine in ("auto", "hybrid"):
        # PyVRP has no breaks, but its plan for the same problem without them is far
        # better than OR-Tools' plan with them (docs/vrp.md). So: solve the relaxation,
        # drop from each route what its breaks make infeasible, and re-insert those jobs
        # with the break-aware cheapest insertion. 'hybrid' hands the repaired plan to
        # OR-Tools' GLS instead (measured worse, and OR-Tools overran limits with breaks).
        deadline = time.perf_counter() + budget_s
        relaxed = dataclasses.replace(rp, vehicles=[dataclasses.replace(v, breaks=()) for v in rp.vehicles])
        share = BREAKS_PYVRP_SHARE if engine == "hybrid" else 0.8
        try:
            seed_seqs = vrp_pyvrp.solve(
                problem=relaxed, job_ids=plan_ids, prizes=prizes, time_limit_s=budget_s * share, seed=seed, warm=warm
            )
        except vrp_pyvrp.Unsupported:
            seed_seqs = vrp_greedy.construct(problem=rp, job_ids=plan_ids)
        vehicles = {v.id: v for v in rp.vehicles}
        seqs, dropped = _repair(rp, seed_seqs)
        if engine == "auto":
            for job in sorted(dropped, key=lambda j: -j.priority):
                if time.perf_counter() > deadline:
                    break
                _insert_one(rp, vehicles, seqs, job, deadline)
            if warm:
                # The warm plan already respects the breaks: never return less than it.
                jobs = {j.id: j for j in rp.jobs}
                before, _ = _repair(rp, {vid: [(jobs[j], k) for j, k in seq] for vid, seq in warm.items()})
                seqs = _better(rp, before, seqs)
            return seqs, "pyvrp-relaxed+insertion"
        warm = {vid: [(j.id, k) for j, k in seq] for vid, seq in seqs.items()}
        left = deadline - time.perf_counter()
        polished = vrp_ortools.solve(problem=rp, job_ids=plan_ids, prizes=prizes, time_limit_s=left, seed=seed, warm=warm)
        return _better(rp, seqs, polished), "pyvrp-relaxed+ortools"
    start = None
    if has_breaks and not warm:
        # OR-Tools' own first solution with breaks was slow and sometimes missing (a
        # 15-job problem at 0.3 s came back empty): start it from the greedy plan,
        # with what the breaks make infeasible removed.
        t0 = time.perf_counter()
        start, _ = _repair(rp, vrp_greedy.construct(problem=rp, job_ids=plan_ids))
        warm = {vid: [(j.id, k) for j, k in seq] for vid, seq in start.items()}
        budget_s -= time.perf_counter() - t0
    seqs = vrp_ortools.solve(problem=rp, job_ids=plan_ids, prizes=prizes, time_limit_s=budget_s, seed=seed, warm=warm)
    if start is not None:
        return _better(rp, start, seqs), "greedy+ortools"
    return seqs, "ortools"


def _repair(rp: Problem, seqs: dict) -> tuple[dict[str, list[tuple[Job, str]]], list[Job]]:
    """Drop, route by route, the first job that breaks a constraint until none does."""
    vehicles = {v.id: v for v in rp.vehicles}
    out: dict[str, list[tuple[Job, str]]] = {}
    dropped: list[Job] = []
    for vid, seq in seqs.items():
        seq = list(seq)
        while seq:
            sched = schedule_route(problem=rp, vehicle=vehicles[vid], sequence=seq)
            if not sched.violations:
                break
            victim = seq[sched.first_bad or 0][0]
            dropped.append(victim)
            seq = [x for x in seq if x[0].id != victim.id]
        if seq:
            out[vid] = seq
    return out, dropped


def _plan_distance(rp: Problem, seqs: dict) -> float:
    """Total distance of vehicle id -> sequence, by arc sums (no re-timing).

    An empty sequence still costs the drive from start to end: a vehicle whose fixed
    prefix is done must go home whether or not it gets more work (counting it as free
    made emptying a route look like a saving).
    """
    vehicles = {v.id: v for v in rp.vehicles}
    total = 0.0
    for vid, seq in seqs.items():
        v = vehicles[vid]
        locs = [v.start_location] + [(j.pickup if k == "pickup" else j.delivery).location for j, k in seq]
        if v.end_location is not None:
            locs.append(v.end_location)
        arr = np.array(locs)
        total += float(rp.distance_m[arr[:-1], arr[1:]].sum())
    return total


def _plan_cost(rp: Problem, seqs: dict) -> float:
    """What the search minimises: distance, plus `wait_cost` × every stop's service start
    (earliest-start timing, as the engines see it) when waiting has a cost."""
    total = _plan_distance(rp, seqs)
    if rp.wait_cost > 0:
        vehicles = {v.id: v for v in rp.vehicles}
        for vid, seq in seqs.items():
            if seq:
                sched = schedule_route(problem=rp, vehicle=vehicles[vid], sequence=list(seq), shift_start=False)
                total += rp.wait_cost * sum(v.start_s for v in sched.visits)
    return total


def _better(rp: Problem, a: dict, b: dict) -> dict:
    """The plan serving more stops, then the cheaper one (`_plan_cost`; re-timing comes later)."""

    def key(seqs):
        return (-sum(len(s) for s in seqs.values()), _plan_cost(rp, seqs))

    return b if b and key(b) < key(a) else a


def _prizes(rp: Problem, plan_ids: list[str]) -> dict[str, int]:
    """Scaled penalty for leaving a job out: above any detour, growing with priority.

    Twice the longest finite arc bounds what serving one more job can add to a route
    (up to triangle-inequality violations, hence the factor 10). Priorities are capped
    at 10 so the largest prize stays far below the engines' 'forbidden arc' cost.
    """
    finite = rp.distance_m[np.isfinite(rp.distance_m)]
    longest = float(finite.max(initial=1.0))
    base = int(20 * max(longest, 1.0) * vrp_pyvrp.SCALE)
    jobs = {j.id: j for j in rp.jobs}
    return {jid: base * (1 + min(max(jobs[jid].priority, 0), 10)) for jid in plan_ids}


def _warm(reduced: Reduced, previous: Solution) -> dict[str, list[tuple[str, str]]]:
    """Previous sequences restricted to what is still to plan (prefixes removed)."""
    jobs = {j.id: j for j in reduced.problem.jobs}
    vehicles = {v.id: v for v in reduced.problem.vehicles}
    out: dict[str, list[tuple[str, str]]] = {}
    for route in previous.routes:
        seq = []
        vehicle = vehicles.get(route.vehicle_id)
        for visit in route.visits:
            job = jobs.get(visit.job_id)
            if job is None or visit.fixed:
                continue
            # A job no longer allowed on this vehicle (a dispatcher pinned it elsewhere, skills
            # changed) must not be warm-started here: the search would keep it and the exact
            # re-timing would then drop it as infeasible. Left out, it is inserted where allowed.
            if vehicle is None or not compatible(job, vehicle):
                continue
            kind = visit.kind if job.kind == "pair" else job.kind
            if (visit.job_id, kind) not in seq:
                seq.append((visit.job_id, kind))
        # A pair needs both stops in the warm start; a half-served pair is dropped.
        counts: dict[str, int] = {}
        for jid, _ in seq:
            counts[jid] = counts.get(jid, 0) + 1
        seq = [(jid, k) for jid, k in seq if jobs[jid].kind != "pair" or counts[jid] == 2]
        if seq:
            out[route.vehicle_id] = seq
    return out


# --------------------------------------------------------------------------- prechecks


def prechecks(rp: Problem) -> dict[str, str]:
    """job id -> why no vehicle can serve it even alone; jobs not listed may be feasible."""
    out: dict[str, str] = {}
    if not rp.jobs:
        return out
    veh = rp.vehicles
    n_dims = rp.n_dims
    caps = np.array([pad(v.capacity, n_dims, INF) - pad(v.initial_load, n_dims, 0.0) for v in veh]).reshape(len(veh), n_dims)
    start = np.array([v.start_location for v in veh])
    end = np.array([-1 if v.end_location is None else v.end_location for v in veh])
    t0 = np.array([v.shift_s[0] for v in veh], dtype=float)
    t1 = np.array([v.shift_s[1] for v in veh], dtype=float)
    maxdur = np.array([v.max_duration_s for v in veh], dtype=float)
    dur = rp.duration_s
    ids = {v.id for v in veh}
    # Fast pass, vectorised over (job, vehicle) for plain single-stop jobs: those some
    # vehicle can serve alone need no reason. Only the rest go through the per-job
    # check below, which also words the reason (a per-job loop cost 30 ms at 450 jobs).
    simple = [j for j in rp.jobs if len(j.stops()) == 1 and not j.skills and j.vehicles is None]
    fine: set[str] = set()
    if simple:
        stops = [j.stops()[0][1] for j in simple]
        loc = np.array([s.location for s in stops])
        early = np.array([s.time_window_s[0] for s in stops], dtype=float)[:, None]
        late = np.array([s.time_window_s[1] for s in stops], dtype=float)[:, None]
        service = np.array([s.service_s for s in stops], dtype=float)[:, None]
        travel = dur[np.ix_(start, loc)].T  # jobs x vehicles
        begin = np.maximum(t0[None, :] + travel, early)
        back = np.where(end[None, :] >= 0, dur[np.ix_(loc, np.maximum(end, 0))], 0.0)
        finish = begin + service + back
        ok = np.isfinite(travel) & (begin <= late + 1e-6) & (finish <= t1[None, :] + 1e-6)
        ok &= finish - np.maximum(t0[None, :], begin - travel) <= maxdur[None, :] + 1e-6
        if n_dims:
            amount = np.array([pad(j.amount, n_dims, 0.0) for j in simple]).reshape(len(simple), n_dims)
            ok &= (amount[:, None, :] <= caps[None, :, :] + 1e-9).all(axis=2)
        fine = {j.id for j, any_ok in zip(simple, ok.any(axis=1)) if any_ok}
    for job in rp.jobs:
        if job.id in fine:
            continue
        reason = _job_reason(job, veh, ids, caps, start, end, t0, t1, maxdur, dur, n_dims)
        if reason:
            out[job.id] = reason
    return out


def _job_reason(job, veh, ids, caps, start, end, t0, t1, maxdur, dur, n_dims) -> str | None:
    for kind, stop in job.stops():
        e, l = stop.time_window_s
        if l < e:
            return f"{kind} time window [{e:g}, {l:g}] ends before it starts"
    if job.skills or job.vehicles is not None:
        ok = np.array([compatible(job, v) for v in veh], dtype=bool)
    else:
        ok = np.ones(len(veh), dtype=bool)
    if not ok.any():
        if job.vehicles is not None and not (job.vehicles & ids):
            return f"restricted to vehicles {sorted(job.vehicles)}, none of which is in the fleet"
        if job.skills:
            return f"no vehicle has the required skills {sorted(job.skills)}"
        return "no vehicle is allowed to serve it"
    amount = pad(job.amount, n_dims, 0.0)
    fits = ok & (caps >= amount - 1e-9).all(axis=1) if n_dims else ok
    if not fits.any():
        return f"amount {list(job.amount)} exceeds the free capacity of every compatible vehicle"
    # Drive start -> stop(s) -> end alone, vectorised over the compatible vehicles.
    idx = np.flatnonzero(fits)
    t = t0[idx].copy()
    loc = start[idx]
    first_travel = None
    late_ok = np.ones(len(idx), dtype=bool)
    for kind, stop in job.stops():
        travel = dur[loc, stop.location]
        if first_travel is None:
            first_travel = travel
            if not np.isfinite(first_travel).any():
                return "its location cannot be reached from any compatible vehicle's start"
        arrival = t + travel
        begin = np.maximum(arrival, stop.time_window_s[0])
        late_ok &= begin <= stop.time_window_s[1] + 1e-6
        if not late_ok.any():
            if kind == "delivery" and job.kind == "pair":
                return "its delivery window closes before any vehicle can get there after the pickup"
            return "its time window closes before any compatible vehicle can get there"
        t = begin + stop.service_s
        loc = np.full(len(idx), stop.location)
    back = np.where(end[idx] >= 0, dur[loc, np.maximum(end[idx], 0)], 0.0)
    finish = t + back
    shift_ok = late_ok & (finish <= t1[idx] + 1e-6)
    if not shift_ok.any():
        return "no compatible vehicle can serve it and finish within its shift"
    first = job.stops()[0][1]
    leave = np.maximum(t0[idx], np.maximum(t0[idx] + first_travel, first.time_window_s[0]) - first_travel)
    if not (shift_ok & (finish - leave <= maxdur[idx] + 1e-6)).any():
        return "serving it would exceed every compatible vehicle's maximum route duration"
    return None


# --------------------------------------------------------------------------- assembly


def _assemble(problem, reduced, seqs, reasons, engine, previous, t_start, *, repair: bool = True) -> Solution:
    rp = reduced.problem
    vehicles = {v.id: v for v in rp.vehicles}
    routes: list[Route] = []
    unassigned = [Unassigned(jid, r) for jid, r in reasons.items()]
    served: set[str] = set()
    for v in rp.vehicles:
        seq = list(seqs.get(v.id, []))
        route, bad = build_route(reduced=reduced, vehicle=v, sequence=seq)
        while bad and seq and repair:
            # Repair: drop the first offending job (both stops of a pair) and re-time.
            sched = schedule_route(problem=rp, vehicle=v, sequence=seq, shift_start=not reduced.prefix_visits.get(v.id))
            victim = seq[sched.first_bad or 0][0].id
            unassigned.append(Unassigned(victim, REASON_REPAIR))
            seq = [s for s in seq if s[0].id != victim]
            route, bad = build_route(reduced=reduced, vehicle=vehicles[v.id], sequence=seq)
        served.update(j.id for j, _ in seq)
        if route.visits:
            routes.append(route)
    known = {u.job_id for u in unassigned}
    for job in rp.jobs:
        if job.id not in served and job.id not in known:
            unassigned.append(Unassigned(job.id, REASON_NO_ROOM))
    distance = sum(r.distance_m for r in routes)
    solution = Solution(routes, unassigned, distance, distance, engine=engine)
    if previous is not None:
        solution.churn = churn(previous=previous, current=solution)
    solution.wall_time_s = time.perf_counter() - t_start
    return solution


# --------------------------------------------------------------------------- insertion


def insert(problem: Problem, *, plan: Solution, time_limit_s: float = 0.2) -> Solution:
    """Add every job of `problem` missing from `plan`'s routes by cheapest feasible insertion.

    Existing routes keep their order (fixed prefixes included); each new job goes
    where it adds the least distance (plus waiting, when `Problem.wait_cost` > 0) while
    every route stays feasible. Jobs that fit
    nowhere come back unassigned with a reason. Call `solve(problem, previous=...)`
    afterwards to improve the plan in the background.
    """
    t_start = time.perf_counter()
    _check_limit(time_limit_s)
    deadline = t_start + time_limit_s
    validate(problem)
    reduced = reduce_prefixes(problem)
    rp = reduced.problem
    jobs = {j.id: j for j in rp.jobs}
    warm = _warm(reduced, plan)
    seqs: dict[str, list[tuple[Job, str]]] = {
        vid: [(jobs[jid], kind) for jid, kind in seq] for vid, seq in warm.items()
    }
    placed = {jid for seq in warm.values() for jid, _ in seq}
    new = sorted((j for j in rp.jobs if j.id not in placed), key=lambda j: -j.priority)
    reasons: dict[str, str] = {}
    vehicles = {v.id: v for v in rp.vehicles}
    if new:
        n_dims = rp.n_dims
        veh = rp.vehicles
        caps = np.array([pad(v.capacity, n_dims, INF) - pad(v.initial_load, n_dims, 0.0) for v in veh]).reshape(len(veh), n_dims)
        arrays = (
            caps,
            np.array([v.start_location for v in veh]),
            np.array([-1 if v.end_location is None else v.end_location for v in veh]),
            np.array([v.shift_s[0] for v in veh], dtype=float),
            np.array([v.shift_s[1] for v in veh], dtype=float),
            np.array([v.max_duration_s for v in veh], dtype=float),
        )
        ids = set(vehicles)
        cache: dict = {}
        for job in new:
            if time.perf_counter() > deadline - 0.01:
                reasons[job.id] = "not inserted: insertion time limit reached"
                continue
            reason = _job_reason(job, veh, ids, *arrays[:1], *arrays[1:], rp.duration_s, n_dims)
            if reason:
                reasons[job.id] = reason
                continue
            if not _insert_one(rp, vehicles, seqs, job, deadline, cache):
                reasons[job.id] = "no feasible position in the current plan (try a full re-optimisation)"
    return _assemble(problem, reduced, seqs, reasons, "insertion", plan, t_start)


def _departures(rp: Problem, v: Vehicle, seq: list, cache: dict | None) -> np.ndarray:
    """Departure time from the start and from each stop of `seq` (earliest-start timing),
    cached per vehicle while its sequence object is unchanged (insertion replaces the list)."""
    hit = cache.get(v.id) if cache is not None else None
    if hit is not None and hit[0] is seq:
        return hit[1]
    deps = [v.shift_s[0]]
    if seq:
        deps += [x.departure_s for x in schedule_route(problem=rp, vehicle=v, sequence=list(seq), shift_start=False).visits]
    out = np.array(deps, dtype=float)
    if cache is not None:
        cache[v.id] = (seq, out)
    return out


def _insert_one(rp: Problem, vehicles: dict[str, Vehicle], seqs: dict, job: Job, deadline: float,
                cache: dict | None = None) -> bool:
    """Cheapest feasible insertion of one job; mutates `seqs`. Candidates are ranked by
    added distance (vectorised), then re-timed in that order until one is feasible —
    exact feasibility for the price of usually one or two route simulations.

    With a waiting cost, a single-stop job's candidates are ranked by added distance plus
    `wait_cost` × (its own service start + the delay it pushes onto every later stop),
    estimated from the route's current departures (waiting slack ignored): the end of a
    long queue then costs what it costs the customers in it."""
    dist = rp.distance_m
    cands: list[tuple[float, str, int, int]] = []
    stops = job.stops()
    wait = rp.wait_cost
    for vid, v in vehicles.items():
        if not compatible(job, v):
            continue
        seq = seqs.get(vid, [])
        locs = [v.start_location] + [(s[0].pickup if s[1] == "pickup" else s[0].delivery).location for s in seq]
        locs_arr = np.array(locs)
        nxt = np.array(locs[1:] + [v.end_location if v.end_location is not None else -1])
        has_next = nxt >= 0
        nxt_safe = np.where(has_next, nxt, 0)
        old = np.where(has_next, dist[locs_arr, nxt_safe], 0.0)
        if len(stops) == 1:
            x = stops[0][1].location
            delta = dist[locs_arr, x] + np.where(has_next, dist[x, nxt_safe], 0.0) - old
            if wait > 0:
                dur = rp.duration_s
                stop = stops[0][1]
                dep = _departures(rp, v, seq, cache)
                start_x = np.maximum(dep + dur[locs_arr, x], stop.time_window_s[0])
                pushed = np.where(has_next, start_x + stop.service_s + dur[x, nxt_safe] - dep - dur[locs_arr, nxt_safe], 0.0)
                after = len(seq) - np.arange(len(locs))
                delta = delta + wait * (start_x + after * np.maximum(pushed, 0.0))
            for pos in np.argsort(delta)[:8]:
                cands.append((float(delta[pos]), vid, int(pos), -1))
        else:
            p, d = stops[0][1].location, stops[1][1].location
            dp = dist[locs_arr, p] + np.where(has_next, dist[p, nxt_safe], 0.0) - old
            dd = dist[locs_arr, d] + np.where(has_next, dist[d, nxt_safe], 0.0) - old
            adjacent = dist[locs_arr, p] + dist[p, d] + np.where(has_next, dist[d, nxt_safe], 0.0) - old
            n = len(locs)
            total = dp[:, None] + dd[None, :]
            total[np.tril_indices(n, -1)] = np.inf
            total[np.arange(n), np.arange(n)] = adjacent
            flat = np.argsort(total, axis=None)[:8]
            for f in flat:
                i, j = divmod(int(f), n)
                if math.isfinite(total[i, j]):
                    cands.append((float(total[i, j]), vid, i, j))
    cands.sort(key=lambda c: c[0])
    for _, vid, i, j in cands:
        if time.perf_counter() > deadline:
            return False
        seq = list(seqs.get(vid, []))
        if j < 0:
            seq.insert(i, (job, stops[0][0]))
        else:
            seq.insert(j, (job, "delivery"))
            seq.insert(i, (job, "pickup"))
        if not schedule_route(problem=rp, vehicle=vehicles[vid], sequence=seq).violations:
            seqs[vid] = seq
            return True
    return False


def solve_sequences(problem: Problem, *, routes: dict[str, Sequence[str]]) -> Solution:
    """Time a given plan (vehicle id -> job ids in order) as is, without repair.

    For tests and what-if tools: `check` then says what, if anything, it breaks.
    """
    validate(problem)
    reduced = reduce_prefixes(problem)
    jobs = {j.id: j for j in reduced.problem.jobs}
    seqs = {}
    for vid, ids in routes.items():
        seq = []
        seen: set[tuple[str, str]] = set()  # a list scan per stop made long routes quadratic
        for jid in ids:
            job = jobs[jid]
            for k, _ in job.stops():
                if (jid, k) not in seen:
                    seen.add((jid, k))
                    seq.append((job, k))
        seqs[vid] = seq
    return _assemble(problem, reduced, seqs, {}, "given", None, time.perf_counter(), repair=False)
