"""OR-Tools engine: the full model (breaks included) on OR-Tools' routing solver.

It is the engine for what PyVRP cannot express (driver breaks, many per-vehicle
restrictions) and a second opinion elsewhere. Modelling choices, each measured or
forced (docs/vrp.md):

- matrices are registered with `RegisterTransitMatrix` (C++ side), not Python
  callbacks: the search then runs several times more iterations per second;
- first solution LOCAL_CHEAPEST_INSERTION: PATH_CHEAPEST_ARC needs a fleet far
  larger than Solomon's to find any solution at all (data/README.md);
- every job sits in a disjunction with a large penalty, so an overfull problem still
  yields a plan and the rest comes back as unassigned rather than "no solution";
- a waiting cost (`Problem.wait_cost`) is a soft upper bound of 0 on every stop's time,
  i.e. weight × service start added to the objective;
- loads: a single dimension is exact when a route only loads (deliveries from the
  start) or only loads-then-unloads (pickups, pairs). When delivery-only jobs share
  a route with pickups, the load at the start must equal the deliveries on that route:
  a second "delivered" dimension and one equality per vehicle say exactly that.
"""

from __future__ import annotations

import math
import time

import numpy as np
from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from routing.vrp_check import BIG, SCALE, compatible, pad, scaled
from routing.vrp_model import Job, Problem


def solve(
    *,
    problem: Problem,
    job_ids: list[str],
    prizes: dict[str, int],
    time_limit_s: float,
    seed: int = 0,
    warm: dict[str, list[tuple[str, str]]] | None = None,
) -> dict[str, list[tuple[Job, str]]]:
    """Plan `job_ids` of a prefix-free `problem`; vehicle id -> sequence of (job, kind)."""
    t_start = time.perf_counter()
    jobs = {j.id: j for j in problem.jobs}
    plan = [jobs[i] for i in job_ids]
    vehicles = problem.vehicles
    n_veh = len(vehicles)
    n_dims = problem.n_dims
    stops: list[tuple[Job, str]] = [(job, kind) for job in plan for kind, _ in job.stops()]
    n_stops = len(stops)
    n_nodes = n_stops + 2 * n_veh
    loc = np.zeros(n_nodes, dtype=np.int64)
    service = np.zeros(n_nodes)
    for i, (job, kind) in enumerate(stops):
        stop = job.pickup if kind == "pickup" else job.delivery
        loc[i] = stop.location
        service[i] = stop.service_s
    for v, veh in enumerate(vehicles):
        loc[n_stops + v] = veh.start_location
        loc[n_stops + n_veh + v] = veh.end_location if veh.end_location is not None else veh.start_location
    dur = problem.duration_s[np.ix_(loc, loc)]
    dist = problem.distance_m[np.ix_(loc, loc)]

    # Horizon: no schedule needs more than the latest possible start plus every service
    # and one longest arc per node. Keeping it that tight matters: with 'no window'
    # written as 1e9 s, break propagation over a 1e12-unit range found nothing in 1 s.
    finite_dur = dur[np.isfinite(dur)]
    latest_start = max(
        [veh.shift_s[0] for veh in vehicles] + [s.time_window_s[0] for j in plan for _, s in j.stops()], default=0.0
    )
    bound_s = latest_start + float(service.sum()) + (n_nodes + 1) * float(finite_dur.max(initial=0.0))
    shift_ends = [veh.shift_s[1] for veh in vehicles]
    horizon_s = min(max(shift_ends), bound_s)  # every route ends by its shift end
    horizon = int(min(horizon_s * SCALE + 1, 2**50))
    transit_t = scaled(dur, up=True, cap=horizon + 1) + np.ceil(service * SCALE - 1e-6).astype(np.int64)[:, None]
    transit_d = scaled(dist, up=False, cap=BIG)
    open_ends = [n_stops + n_veh + v for v, veh in enumerate(vehicles) if veh.end_location is None]
    transit_t[:, open_ends] = 0
    transit_d[:, open_ends] = 0
    transit_t = np.minimum(transit_t, horizon + 1)

    starts = [n_stops + v for v in range(n_veh)]
    ends = [n_stops + n_veh + v for v in range(n_veh)]
    manager = pywrapcp.RoutingIndexManager(n_nodes, n_veh, starts, ends)
    routing = pywrapcp.RoutingModel(manager)
    solver = routing.solver()
    # Transit matrices are indexed by node, which is what RegisterTransitMatrix expects.
    # Costs are integers: with a waiting cost, arc costs and penalties are counted in tenths
    # so that a weight like 0.25 m/s is not rounded to 0 or 1 (it becomes 2.5 -> 2 or 3 tenths: 10 % steps).
    cost_k = 10 if problem.wait_cost > 0 else 1
    dist_cb = routing.RegisterTransitMatrix((transit_d * cost_k).tolist())
    routing.SetArcCostEvaluatorOfAllVehicles(dist_cb)
    time_cb = routing.RegisterTransitMatrix(transit_t.tolist())
    routing.AddDimension(time_cb, horizon, horizon, False, "time")
    time_dim = routing.GetDimensionOrDie("time")

    def index(node: int) -> int:
        return manager.NodeToIndex(node)

    wait_coeff = max(1, round(problem.wait_cost * cost_k)) if problem.wait_cost > 0 else 0
    for i, (job, kind) in enumerate(stops):
        stop = job.pickup if kind == "pickup" else job.delivery
        early = max(0, math.ceil(stop.time_window_s[0] * SCALE - 1e-6))
        late = stop.time_window_s[1]
        late_i = horizon if not math.isfinite(late) else min(horizon, math.floor(late * SCALE + 1e-6))
        if late_i < early:
            late_i = early  # the precheck already rejected empty windows; keep the model valid
        time_dim.CumulVar(index(i)).SetRange(early, late_i)
        if wait_coeff:
            # Waiting cost: coeff × (service start − 0) per stop, in the same scaled units as the arc costs.
            time_dim.SetCumulVarSoftUpperBound(index(i), 0, wait_coeff)
    for v, veh in enumerate(vehicles):
        t0 = max(0, math.ceil(veh.shift_s[0] * SCALE - 1e-6))
        t1 = horizon if not math.isfinite(veh.shift_s[1]) else min(horizon, math.floor(veh.shift_s[1] * SCALE + 1e-6))
        time_dim.CumulVar(routing.Start(v)).SetRange(t0, max(t0, t1))
        time_dim.CumulVar(routing.End(v)).SetRange(t0, max(t0, t1))
        if math.isfinite(veh.max_duration_s):
            time_dim.SetSpanUpperBoundForVehicle(int(math.floor(veh.max_duration_s * SCALE + 1e-6)), v)
        routing.AddVariableMinimizedByFinalizer(time_dim.CumulVar(routing.End(v)))
        routing.AddVariableMaximizedByFinalizer(time_dim.CumulVar(routing.Start(v)))
    if any(veh.breaks for veh in vehicles):
        visit = [0] * routing.Size()
        for idx in range(routing.Size()):
            visit[idx] = int(math.ceil(service[manager.IndexToNode(idx)] * SCALE - 1e-6))
        for v, veh in enumerate(vehicles):
            if not veh.breaks:
                continue
            intervals = [
                solver.FixedDurationIntervalVar(
                    max(0, math.ceil(b.earliest_start_s * SCALE)),
                    max(0, math.floor(b.latest_start_s * SCALE)),
                    int(math.ceil(b.duration_s * SCALE)),
                    False,
                    f"break {veh.id} {b.id}",
                )
                for b in veh.breaks
            ]
            time_dim.SetBreakIntervalsOfVehicle(intervals, v, visit)

    # Loads.
    if n_dims:
        deliveries_only = any(j.kind == "delivery" for j in plan)
        loads_back = any(j.kind != "delivery" for j in plan)
        mixed = deliveries_only and loads_back
        for d in range(n_dims):
            caps = []
            for veh in vehicles:
                c = pad(veh.capacity, n_dims, math.inf)[d]
                caps.append(int(math.floor(c * SCALE)) if math.isfinite(c) else 2**50)
            init = [int(math.ceil(pad(veh.initial_load, n_dims, 0.0)[d] * SCALE)) for veh in vehicles]
            demand = [0] * n_nodes
            delivered = [0] * n_nodes
            for i, (job, kind) in enumerate(stops):
                a = int(math.ceil(pad(job.amount, n_dims, 0.0)[d] * SCALE - 1e-6))
                if job.kind == "delivery":
                    demand[i] = -a if mixed else a
                    delivered[i] = a
                elif job.kind == "pickup" or kind == "pickup":
                    demand[i] = a
                else:
                    demand[i] = -a
            cb = routing.RegisterUnaryTransitVector(demand)
            routing.AddDimensionWithVehicleCapacity(cb, 0, caps, False, f"load{d}")
            load = routing.GetDimensionOrDie(f"load{d}")
            if mixed:
                cb2 = routing.RegisterUnaryTransitVector(delivered)
                routing.AddDimensionWithVehicleCapacity(cb2, 0, [2**50] * n_veh, True, f"delivered{d}")
                dl = routing.GetDimensionOrDie(f"delivered{d}")
                for v in range(n_veh):
                    solver.Add(load.CumulVar(routing.Start(v)) == dl.CumulVar(routing.End(v)) + init[v])
            else:
                for v in range(n_veh):
                    load.CumulVar(routing.Start(v)).SetValue(min(init[v], caps[v]))

    # Pairs, skills, disjunctions.
    node_of: dict[tuple[str, str], int] = {(job.id, kind): i for i, (job, kind) in enumerate(stops)}
    for job in plan:
        nodes = [index(node_of[(job.id, k)]) for k, _ in job.stops()]
        if job.kind == "pair":
            p, d = nodes
            routing.AddPickupAndDelivery(p, d)
            solver.Add(routing.VehicleVar(p) == routing.VehicleVar(d))
            solver.Add(time_dim.CumulVar(p) <= time_dim.CumulVar(d))
            solver.Add(routing.ActiveVar(p) == routing.ActiveVar(d))
        allowed = [v for v, veh in enumerate(vehicles) if compatible(job, veh)]
        if len(allowed) < n_veh:
            for n in nodes:
                # SetAllowedVehiclesForIndex rejects Python lists in this OR-Tools build
                # (absl::Span binding); restricting the vehicle variable is equivalent.
                # -1 keeps the node droppable (its disjunction decides the price).
                routing.VehicleVar(n).SetValues([-1] + allowed)
        penalty = prizes.get(job.id, BIG) * cost_k
        routing.AddDisjunction([nodes[0]], penalty)
        for n in nodes[1:]:
            routing.AddDisjunction([n], 0)

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.LOCAL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    # OR-Tools overshoots short limits (0.1 s asked, ~0.2 s taken: data/README.md), and
    # the model above already cost time: ask for what is left minus a safety margin.
    left = time_limit_s - (time.perf_counter() - t_start)
    # With breaks OR-Tools overran more (1.54 s for 1 s on RC105 with a lunch break).
    share = 0.6 if any(veh.breaks for veh in vehicles) else 0.85
    params.time_limit.FromMilliseconds(max(1, int((left * share - 0.03) * 1000)))
    params.log_search = False
    routing.CloseModelWithParameters(params)
    solution = None
    if warm:
        vidx = {veh.id: v for v, veh in enumerate(vehicles)}
        routes = [[] for _ in range(n_veh)]
        for vid, seq in warm.items():
            if vid in vidx:
                routes[vidx[vid]] = [index(node_of[s]) for s in seq if s in node_of]
        initial = routing.ReadAssignmentFromRoutes(routes, True)
        if initial is not None:
            solution = routing.SolveFromAssignmentWithParameters(initial, params)
    if solution is None:
        solution = routing.SolveWithParameters(params)
    out: dict[str, list[tuple[Job, str]]] = {}
    if solution is None:
        return out
    for v, veh in enumerate(vehicles):
        idx = solution.Value(routing.NextVar(routing.Start(v)))
        seq = []
        while not routing.IsEnd(idx):
            seq.append(stops[manager.IndexToNode(idx)])
            idx = solution.Value(routing.NextVar(idx))
        if seq:
            out[veh.id] = seq
    return out
