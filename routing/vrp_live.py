"""A seeded synthetic live fleet for the dynamic-insertion benchmark and tests.

A square city, vehicles at their current positions partway through a shift, each with
a committed first stop (its fixed prefix), and a stream of new jobs to insert. Kept in
the library (not in tests/) so benchmarks/vrp_insert.py and the tests build exactly
the same scenario; it has no use in production.
"""

from __future__ import annotations

import numpy as np

from routing.vrp_model import Job, Problem, Stop, StopRef, Vehicle

SPEED_MPS = 8.0  # ~30 km/h city driving


def live_fleet(
    *,
    n_vehicles: int = 50,
    n_jobs: int = 500,
    n_new: int = 100,
    size_m: float = 12_000.0,
    seed: int = 0,
) -> tuple[Problem, list[Job]]:
    """(problem without the new jobs, the new jobs); all locations are in the matrices."""
    rng = np.random.default_rng(seed)
    n_loc = 1 + n_vehicles + n_jobs + n_new
    xy = rng.uniform(0, size_m, (n_loc, 2))
    xy[0] = size_m / 2  # depot
    dist = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)) * 1.3  # detour factor
    dur = dist / SPEED_MPS
    now_s = 9 * 3600.0
    end_s = 18 * 3600.0

    def job(i: int, loc: int) -> Job:
        early = float(rng.uniform(now_s, end_s - 3 * 3600))
        return Job(
            id=f"job{i}",
            delivery=Stop(location=loc, service_s=120.0, time_window_s=(early, early + 3 * 3600)),
            amount=(float(rng.uniform(1, 20)), float(rng.uniform(0.01, 0.2)), 1.0),
        )

    jobs = [job(i, 1 + n_vehicles + i) for i in range(n_jobs)]
    new = [job(n_jobs + i, 1 + n_vehicles + n_jobs + i) for i in range(n_new)]
    # Every vehicle is already driving to its first job: that stop is committed.
    jobs = [
        Job(id=j.id, delivery=Stop(location=j.delivery.location, service_s=120.0, time_window_s=(now_s, end_s)), amount=j.amount)
        if k < n_vehicles else j
        for k, j in enumerate(jobs)
    ]
    vehicles = [
        Vehicle(
            id=f"van{k}",
            start_location=1 + k,
            end_location=0,
            capacity=(400.0, 3.0, 40.0),  # weight_kg, volume_m3, parcels
            shift_s=(now_s, end_s),
            fixed_prefix=(StopRef(jobs[k].id),),
        )
        for k in range(n_vehicles)
    ]
    return Problem(duration_s=dur, distance_m=dist, vehicles=vehicles, jobs=jobs, name=f"live{seed}"), new
