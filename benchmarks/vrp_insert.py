"""Dynamic insertion benchmark: one new job into a live plan of 50 vehicles and 500 stops.

Builds the seeded live fleet of `routing.vrp_live` (every van already committed to its
first stop), plans it, then streams new jobs into the plan one at a time with
`vrp.insert` and reports the latency per insertion (p50/p95/max; target p95 ≤ 200 ms).
For comparison, in the same run and on the same states, it times the alternatives a
planner could use instead: a warm-started `vrp.solve` (PyVRP from the current plan)
and a cold `vrp.solve`, both given 200 ms. Finally a full re-optimisation from the
last plan reports distance gained, churn, and that every fixed prefix held — free,
with `max_churn` bounds, and with `keep_vehicles=True` (each route re-sequenced alone).

    .venv/bin/python -m benchmarks.vrp_insert
    .venv/bin/python -m benchmarks.vrp_insert --new 100 --compare 10 --initial-s 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from routing import vrp, vrp_live  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=int, default=50)
    ap.add_argument("--stops", type=int, default=500)
    ap.add_argument("--new", type=int, default=100, help="jobs inserted one at a time")
    ap.add_argument("--compare", type=int, default=10, help="states on which the alternatives are also timed")
    ap.add_argument("--budget-s", type=float, default=0.2, help="time limit of insert and of the alternatives")
    ap.add_argument("--initial-s", type=float, default=5.0)
    ap.add_argument("--reopt-s", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    problem, new = vrp_live.live_fleet(n_vehicles=args.vehicles, n_jobs=args.stops, n_new=args.new, seed=args.seed)
    t = time.perf_counter()
    plan = vrp.solve(problem, time_limit_s=args.initial_s)
    print(f"# live fleet: {args.vehicles} vehicles, {args.stops} stops, seed {args.seed}")
    print(f"initial plan: {time.perf_counter() - t:.2f} s, distance {plan.distance_m / 1000:.1f} km, "
          f"unassigned {len(plan.unassigned)}, violations {len(vrp.check(problem, plan))}")

    every = max(1, args.new // max(args.compare, 1))
    lat = {"insert": [], "warm solve": [], "cold solve": []}
    dist = {"insert": [], "warm solve": [], "cold solve": []}
    failures = 0
    for k, job in enumerate(new):
        grown = dataclasses.replace(problem, jobs=problem.jobs + [job])
        if args.compare and k % every == 0:
            for label, kwargs in (("warm solve", {"previous": plan}), ("cold solve", {})):
                t = time.perf_counter()
                alt = vrp.solve(grown, time_limit_s=args.budget_s, **kwargs)
                lat[label].append(time.perf_counter() - t)
                dist[label].append((alt.distance_m, len(alt.unassigned)))
        t = time.perf_counter()
        updated = vrp.insert(grown, plan=plan, time_limit_s=args.budget_s)
        lat["insert"].append(time.perf_counter() - t)
        if args.compare and k % every == 0:
            dist["insert"].append((updated.distance_m, len(updated.unassigned)))
        failures += bool(vrp.check(grown, updated))
        problem, plan = grown, updated

    print()
    print(f"{'method':<12} {'n':>4} {'p50_ms':>7} {'p95_ms':>7} {'max_ms':>7} {'mean km':>8} {'unassigned':>10}")
    for label, xs in lat.items():
        if not xs:
            continue
        ms = np.array(xs) * 1000
        km = statistics.mean(d for d, _ in dist[label]) / 1000 if dist[label] else float("nan")
        un = statistics.mean(u for _, u in dist[label]) if dist[label] else float("nan")
        print(f"{label:<12} {len(xs):>4} {np.percentile(ms, 50):>7.1f} {np.percentile(ms, 95):>7.1f} {ms.max():>7.1f} {km:>8.1f} {un:>10.2f}")
    if dist["warm solve"]:
        r = statistics.mean(a[0] / b[0] for a, b in zip(dist["insert"], dist["warm solve"]))
        r2 = statistics.mean(a[0] / b[0] for a, b in zip(dist["insert"], dist["cold solve"]))
        p95 = np.percentile(lat["insert"], 95) / np.percentile(lat["warm solve"], 95)
        print(f"insert/warm-solve distance ratio {r:.4f}, insert/cold-solve {r2:.4f}, p95 latency ratio insert/warm {p95:.3f}")
    print(f"plans failing the checker after an insertion: {failures}/{len(new)}; "
          f"unassigned after all insertions: {len(plan.unassigned)}")

    for label, kwargs in (
        ("free", {}),
        ("max_churn=0.1", {"max_churn": 0.1}),
        ("max_churn=0.3", {"max_churn": 0.3}),
        ("keep_vehicles", {"keep_vehicles": True}),
    ):
        t = time.perf_counter()
        final = vrp.solve(problem, time_limit_s=args.reopt_s, previous=plan, **kwargs)
        wall = time.perf_counter() - t
        print(f"re-optimisation {label} ({args.reopt_s:g} s, warm): {wall:.2f} s, distance {plan.distance_m / 1000:.1f} -> "
              f"{final.distance_m / 1000:.1f} km, churn {final.churn:.1%}, unassigned {len(final.unassigned)}, "
              f"violations (fixed prefixes included) {len(vrp.check(problem, final))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
