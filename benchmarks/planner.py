"""Planner benchmark: 50 vans and 1,000 open jobs on a real city graph.

Measures what the planner does per re-plan — travel-time matrix on the road graph, VRP
model, solve — through the planner's own code (`dispatch.planner.build_problem`,
`dispatch.planner.solve`), for a full re-plan (warm-started from the previous plan) and
for inserting one new job into the live plan. The baseline measured in the same run is a
cold full solve (no warm start) at the same budget: the table prints each figure and its
ratio to that baseline, plus plan quality (distance, unassigned) and churn.

    .venv/bin/python benchmarks/planner.py [--osm ../shared/data/osm/heidelberg.osm.pbf]
        [--vehicles 50] [--jobs 1000] [--repeats 5] [--inserts 20] [--time-limit 1.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models import Depot, Driver, Vehicle as VehicleRow  # noqa: E402
from core.settings import Settings  # noqa: E402
from dispatch import planner, travel  # noqa: E402
from dispatch.models import DeliveryJob, Shift  # noqa: E402
from dispatch.service import point  # noqa: E402
from routing import graph as graphmod  # noqa: E402

DEFAULT_OSM = Path(__file__).resolve().parents[2] / "shared" / "data" / "osm" / "heidelberg.osm.pbf"


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def make_snapshot(g, *, n_vehicles: int, n_jobs: int, seed: int) -> planner.Snapshot:
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    nodes = rng.choice(g.n_nodes, size=1 + n_vehicles + n_jobs, replace=False)
    lat, lng = g.lat[nodes], g.lng[nodes]
    depot = Depot(id=1, name="depot", location=point(float(lat[0]), float(lng[0])))
    drivers, positions = [], {}
    for k in range(n_vehicles):
        d = Driver(id=k + 1, display_name=f"van {k + 1}", active=True)
        s = Shift(driver_id=d.id, started_at=now - timedelta(hours=1), start_lat=None, start_lng=None)
        v = VehicleRow(id=k + 1, plate=f"V{k}", capacity_weight_kg=600.0, capacity_volume_l=4000.0, capacity_parcels=60, skills=[])
        drivers.append((d, s, v))
        positions[d.id] = (float(lat[1 + k]), float(lng[1 + k]))
    jobs = []
    for i in range(n_jobs):
        start = now + timedelta(minutes=float(rng.uniform(0, 240)))
        j = DeliveryJob(id=uuid.UUID(int=rng.integers(1 << 62) << 64 | i), state="created", state_reason="", driver_id=None,
                        sequence=None, pickup=depot.location, dropoff=point(float(lat[1 + n_vehicles + i]), float(lng[1 + n_vehicles + i])),
                        window_start=start, window_end=start + timedelta(hours=3), service_s=120.0,
                        weight_kg=float(rng.uniform(0.5, 15)), volume_l=float(rng.uniform(2, 60)), parcels=1, priority=0, skills=[])
        jobs.append(j)
    return planner.Snapshot(now=now, jobs=jobs, drivers=drivers, depots={1: depot}, positions=positions)


def adopt(snap: planner.Snapshot, solution) -> None:
    """Write a solution back onto the snapshot's jobs, as apply_plan does in the database."""
    jobs = {str(j.id): j for j in snap.jobs}
    for route in solution.routes:
        for seq, visit in enumerate(route.visits):
            if visit.kind == "delivery":
                job = jobs[visit.job_id]
                job.driver_id, job.sequence, job.state = int(route.vehicle_id), seq, "assigned"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--osm", default=str(DEFAULT_OSM))
    ap.add_argument("--vehicles", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inserts", type=int, default=20)
    ap.add_argument("--time-limit", type=float, default=1.5, help="solver budget of a full re-plan (s)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-churn", type=float, default=0.2, help="share of stops a re-plan may move (the planner's default)")
    ap.add_argument("--wait-cost", type=float, default=None,
                    help="metres per second of a customer's wait (default: SERENA_DISPATCH_WAIT_COST's default; 0 = distance only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    g = graphmod.load(args.osm, progress=not args.json)
    model = travel.RoadGraph(g)
    settings = Settings(env="test", dispatch_graph="")
    if args.wait_cost is not None:
        settings = settings.model_copy(update={"dispatch_wait_cost": args.wait_cost})
    snap = make_snapshot(g, n_vehicles=args.vehicles, n_jobs=args.jobs, seed=args.seed)

    def vans_used(sol) -> int:
        return sum(1 for r in sol.routes if any(not v.job_id.startswith(planner.RELOAD) for v in r.visits))

    def mean_start(sol) -> float:
        starts = [v.start_s for r in sol.routes for v in r.visits if v.kind == "delivery"]
        return float(np.mean(starts)) if starts else 0.0

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    # Baseline: cold full solve (matrix + model + solve, no warm start).
    (problem, _), t_build = timed(lambda: planner.build_problem(snap, settings, model))
    cold, t_cold = timed(lambda: planner.solve(problem, None, mode="full", time_limit_s=args.time_limit))
    baseline_s = t_build + t_cold
    adopt(snap, cold)

    full_s, churns, dists, unassigned = [], [], [], []
    for _ in range(args.repeats):
        def replan():
            prob, _ = planner.build_problem(snap, settings, model)
            prev = planner.previous_solution(prob, snap)
            return planner.solve(prob, prev, mode="full", time_limit_s=args.time_limit, max_churn=args.max_churn)
        sol, dt = timed(replan)
        full_s.append(dt)
        churns.append(sol.churn or 0.0)
        dists.append(sol.distance_m)
        unassigned.append(len(sol.unassigned))
        adopt(snap, sol)

    rng = np.random.default_rng(args.seed + 1)
    insert_s, insert_unassigned = [], 0
    for i in range(args.inserts):
        node = int(rng.integers(g.n_nodes))
        start = snap.now + timedelta(minutes=30)
        new = DeliveryJob(id=uuid.uuid4(), state="created", state_reason="", driver_id=None, sequence=None,
                          pickup=snap.depots[1].location, dropoff=point(float(g.lat[node]), float(g.lng[node])),
                          window_start=start, window_end=start + timedelta(hours=3), service_s=120.0, weight_kg=2.0,
                          volume_l=5.0, parcels=1, priority=0, skills=[])
        snap.jobs.append(new)

        def insert():
            prob, _ = planner.build_problem(snap, settings, model)
            prev = planner.previous_solution(prob, snap)
            return planner.solve(prob, prev, mode="insert", time_limit_s=0.2)
        sol, dt = timed(insert)
        insert_s.append(dt)
        insert_unassigned += int(str(new.id) in {u.job_id for u in sol.unassigned})
        adopt(snap, sol)

    result = {
        "graph": Path(args.osm).name, "nodes": g.n_nodes, "vehicles": args.vehicles, "jobs": args.jobs,
        "time_limit_s": args.time_limit,
        "baseline_cold_s": round(baseline_s, 3), "baseline_distance_km": round(cold.distance_m / 1000, 1),
        "baseline_unassigned": len(cold.unassigned), "matrix_and_model_s": round(t_build, 3),
        "full_replan_p50_s": round(float(np.median(full_s)), 3), "full_replan_p95_s": round(p95(full_s), 3),
        "full_distance_km": round(dists[-1] / 1000, 1), "full_unassigned": unassigned[-1],
        "full_churn_mean_pct": round(100 * float(np.mean(churns)), 2),
        "insert_p50_ms": round(1000 * float(np.median(insert_s)), 1), "insert_p95_ms": round(1000 * p95(insert_s), 1),
        "insert_unassigned": insert_unassigned, "wait_cost": settings.dispatch_wait_cost,
        "baseline_vans_used": vans_used(cold), "full_vans_used": vans_used(sol),
        "baseline_mean_start_min": round(mean_start(cold) / 60, 1), "full_mean_start_min": round(mean_start(sol) / 60, 1),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    rows = [
        ("cold full solve (baseline)", baseline_s, baseline_s, f"{result['baseline_distance_km']} km, {result['baseline_unassigned']} unassigned, "
         f"{result['baseline_vans_used']} vans, mean service start {result['baseline_mean_start_min']} min"),
        ("full re-plan p50 (warm)", float(np.median(full_s)), baseline_s, f"{result['full_distance_km']} km, churn {result['full_churn_mean_pct']} %, "
         f"{result['full_vans_used']} vans, mean service start {result['full_mean_start_min']} min"),
        ("full re-plan p95 (warm)", p95(full_s), baseline_s, "target ≤ 2.0 s"),
        ("insert one job p50", float(np.median(insert_s)), baseline_s, ""),
        ("insert one job p95", p95(insert_s), baseline_s, f"target ≤ 0.200 s; {insert_unassigned}/{args.inserts} not placed"),
    ]
    print(f"planner on {result['graph']} ({g.n_nodes} nodes): {args.vehicles} vans, {args.jobs} jobs, "
          f"solver budget {args.time_limit} s, wait cost {settings.dispatch_wait_cost} m/s; matrix + model {t_build:.3f} s")
    print(f"{'what':<30} {'seconds':>9} {'× baseline':>11}  note")
    for name, v, base, note in rows:
        print(f"{name:<30} {v:>9.3f} {v / base:>11.3f}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
