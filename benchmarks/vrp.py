"""Solomon VRPTW benchmark: Serena's VRP engine against PyVRP and VROOM, same run, same limits.

For each instance and time limit, every solver gets the same wall-time budget on
the same machine, one after the other (never in parallel, so they do not steal each
other's cores). Distances are recomputed here from each solver's routes with
unrounded Euclidean arcs, and every solver's routes are checked with Serena's
independent checker (`feasible` column), so a solver cannot win by rounding.
Gap is against the distance-only best-known solutions in bks.csv.

    .venv/bin/python -m benchmarks.vrp --time-limits 1,10
    .venv/bin/python -m benchmarks.vrp --time-limits 1 --instances R1 --solvers serena,pyvrp
    .venv/bin/python -m benchmarks.vrp --time-limits 1 --breaks   # lunch breaks: Serena vs VROOM

Peers: PyVRP (`pyvrp.solve`, its default iterated local search, `MaxRuntime`) and
VROOM (pyvroom, exploration level 5, one thread, `timeout`; VROOM applies the timeout
to its local search only, so its wall time can exceed the limit and is reported as is).
Serena and PyVRP are single-threaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from routing import vrp, vrplib_io

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.paths import VRP  # noqa: E402  (shared data location, never copied)

SOLOMON = VRP / "solomon"
SCALE = 1000


def lunch(horizon_s: float) -> vrp.Break:
    """The --breaks variant: every driver takes 3 % of the horizon, starting in its middle fifth."""
    return vrp.Break(id="lunch", earliest_start_s=0.4 * horizon_s, latest_start_s=0.6 * horizon_s, duration_s=0.03 * horizon_s)


def load(path: Path, breaks: bool) -> vrp.Problem:
    problem = vrplib_io.read_instance(path)
    if breaks:
        brk = lunch(problem.vehicles[0].shift_s[1])
        problem = dataclasses.replace(problem, vehicles=[dataclasses.replace(v, breaks=(brk,)) for v in problem.vehicles])
    return problem


def serena(path: Path, limit_s: float, seed: int, engine: str, breaks: bool = False) -> tuple[list[list[int]], float]:
    problem = load(path, breaks)
    t = time.perf_counter()
    solution = vrp.solve(problem, time_limit_s=limit_s, engine=engine, seed=seed)
    return vrplib_io.routes_as_numbers(solution), time.perf_counter() - t


def pyvrp_direct(path: Path, limit_s: float, seed: int) -> tuple[list[list[int]], float]:
    import pyvrp
    from pyvrp.stop import MaxRuntime

    data = pyvrp.read(str(path), round_func="exact")  # x1000, rounded: as fine as ours
    t = time.perf_counter()
    result = pyvrp.solve(data, stop=MaxRuntime(limit_s), seed=seed, collect_stats=False)
    wall = time.perf_counter() - t
    routes = []
    for route in result.best.routes():
        routes.append([a.idx + data.num_depots for a in route.schedule() if a.is_client()])
    return [r for r in routes if r], wall


def vroom_direct(path: Path, limit_s: float, seed: int, breaks: bool = False) -> tuple[list[list[int]], float]:
    import vrplib
    import vroom

    d = vrplib.read_instance(str(path))
    w = d["edge_weight"]
    inp = vroom.Input()
    # Durations rounded up (never optimistic), costs rounded to nearest, both x1000.
    inp.set_durations_matrix(profile="car", matrix_input=np.ceil(w * SCALE - 1e-6).astype(np.uint32))
    inp.set_costs_matrix(profile="car", matrix_input=np.rint(w * SCALE).astype(np.uint32))
    tw = d["time_window"]
    service = int(np.ceil(float(d["service_time"]) * SCALE))
    extra = {}
    if breaks:
        b = lunch(float(tw[0, 1]))
        window = vroom.TimeWindow(int(np.ceil(b.earliest_start_s * SCALE)), int(b.latest_start_s * SCALE))
        extra["breaks"] = [vroom.Break(id=1, time_windows=[window], service=int(np.ceil(b.duration_s * SCALE)))]
    for k in range(int(d["vehicles"])):
        inp.add_vehicle(
            vroom.Vehicle(
                id=k + 1, start=0, end=0, profile="car", capacity=[int(d["capacity"])],
                time_window=vroom.TimeWindow(int(tw[0, 0] * SCALE), int(tw[0, 1] * SCALE)), **extra,
            )
        )
    for i in range(1, int(d["dimension"])):
        inp.add_job(
            vroom.Job(
                id=i, location=i, default_service=service, delivery=[int(d["demand"][i])],
                time_windows=[vroom.TimeWindow(int(tw[i, 0] * SCALE), int(tw[i, 1] * SCALE))],
            )
        )
    t = time.perf_counter()
    sol = inp.solve(exploration_level=5, nb_threads=1, timeout=datetime.timedelta(seconds=limit_s))
    wall = time.perf_counter() - t
    df = sol.routes
    routes = []
    for _, group in df[df["type"] == "job"].groupby("vehicle_id", sort=True):
        routes.append([int(x) for x in group["id"]])
    return routes, wall


def evaluate(path: Path, routes: list[list[int]], breaks: bool = False) -> tuple[float, bool, int]:
    """(unrounded distance, feasible per Serena's checker, customers served)."""
    problem = load(path, breaks)
    plan = {f"v{k + 1}": [str(c) for c in r] for k, r in enumerate(routes)}
    if len(plan) > len(problem.vehicles):
        return float("nan"), False, 0
    solution = vrp.solve_sequences(problem, routes=plan)
    served = {v.job_id for r in solution.routes for v in r.visits}
    missing = [j.id for j in problem.jobs if j.id not in served]
    solution.unassigned = [vrp.Unassigned(j, "not routed") for j in missing]
    ok = not missing and not vrp.check(problem, solution)
    return solution.distance_m, ok, len(served)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-limits", default="1,10", help="comma-separated seconds, e.g. 1,10")
    ap.add_argument("--instances", default="", help="comma-separated names or prefixes (C1, R101); default all")
    ap.add_argument("--solvers", default="serena,pyvrp,vroom")
    ap.add_argument("--engine", default="auto", help="Serena engine: auto | pyvrp | ortools | hybrid")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--breaks", action="store_true", help="every driver takes a lunch break (PyVRP cannot: skipped)")
    args = ap.parse_args(argv)

    bks = vrplib_io.read_bks(SOLOMON / "bks.csv")
    names = sorted(bks)
    if args.instances:
        wanted = [w.strip() for w in args.instances.split(",") if w.strip()]
        names = [n for n in names if any(n == w or (n.startswith(w) and len(w) < 4) for w in wanted)]
    limits = [float(x) for x in args.time_limits.split(",")]
    solvers = [s.strip() for s in args.solvers.split(",")]
    if args.breaks:
        solvers = [s for s in solvers if s != "pyvrp"]
    run = {
        "serena": lambda p, t: serena(p, t, args.seed, args.engine, args.breaks),
        "pyvrp": lambda p, t: pyvrp_direct(p, t, args.seed),
        "vroom": lambda p, t: vroom_direct(p, t, args.seed, args.breaks),
    }
    label = {"serena": f"serena[{args.engine}]", "pyvrp": "pyvrp", "vroom": "vroom"}

    variant = " with a lunch break per driver (gap vs the break-free best known)" if args.breaks else ""
    print(f"# Solomon VRPTW{variant}, {len(names)} instances, limits {limits} s, solvers {solvers}, seed {args.seed}")
    print(f"{'limit':>5} {'instance':<7} {'solver':<16} {'veh':>3} {'distance':>10} {'gap%':>7} {'time_s':>7} feasible")
    results: dict[tuple[float, str], list[tuple[float, float, bool, int]]] = {}
    for limit in limits:
        for name in names:
            path = SOLOMON / f"{name}.vrp"
            for solver in solvers:
                routes, wall = run[solver](path, limit)
                distance, ok, _ = evaluate(path, routes, args.breaks)
                gap = 100 * (distance / bks[name]["distance"] - 1)
                results.setdefault((limit, solver), []).append((gap, wall, ok, len(routes)))
                print(f"{limit:>5g} {name:<7} {label[solver]:<16} {len(routes):>3} {distance:>10.3f} {gap:>7.2f} {wall:>7.2f} {'yes' if ok else 'NO'}", flush=True)

    print()
    print(f"{'limit':>5} {'solver':<16} {'mean gap%':>9} {'max gap%':>8} {'mean veh':>8} {'mean time_s':>11} {'max time_s':>10} feasible")
    for limit in limits:
        for solver in solvers:
            rows = results[(limit, solver)]
            gaps = [g for g, _, ok, _ in rows]
            print(
                f"{limit:>5g} {label[solver]:<16} {statistics.mean(gaps):>9.2f} {max(gaps):>8.2f} "
                f"{statistics.mean(r[3] for r in rows):>8.2f} {statistics.mean(r[1] for r in rows):>11.2f} "
                f"{max(r[1] for r in rows):>10.2f} {sum(r[2] for r in rows)}/{len(rows)}"
            )
        if "serena" in solvers:
            base = results[(limit, "serena")]
            for solver in solvers:
                if solver == "serena":
                    continue
                ratio = statistics.mean((100 + a[0]) / (100 + b[0]) for a, b in zip(base, results[(limit, solver)]))
                print(f"{limit:>5g} distance ratio serena/{solver}: {ratio:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
