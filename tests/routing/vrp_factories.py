"""Small synthetic VRP problems for tests: points on a plane, Euclidean matrices."""

from __future__ import annotations

import numpy as np

from routing.vrp import Job, Problem, Stop, Vehicle


def plane(points: list[tuple[float, float]], *, speed: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(duration_s, distance_m) for points, travelling at `speed` distance units per second."""
    xy = np.asarray(points, dtype=float)
    dist = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    return dist / speed, dist


def random_problem(
    *,
    n_jobs: int = 20,
    n_vehicles: int = 4,
    seed: int = 0,
    capacity: tuple[float, ...] = (10.0, 10.0, 10.0),
    windows: bool = True,
    **vehicle_kwargs,
) -> Problem:
    """Depot at location 0, one delivery per other location, multi-dimensional amounts."""
    rng = np.random.default_rng(seed)
    pts = [(50.0, 50.0)] + [tuple(rng.uniform(0, 100, 2)) for _ in range(n_jobs)]
    dur, dist = plane(pts)
    jobs = []
    for i in range(1, n_jobs + 1):
        tw = (0.0, 1e9)
        if windows:
            early = float(rng.uniform(0, 300))
            tw = (early, early + 150.0)
        amount = tuple(float(x) for x in rng.integers(1, 4, len(capacity)))
        jobs.append(Job(id=f"j{i}", delivery=Stop(location=i, service_s=5.0, time_window_s=tw), amount=amount))
    vehicles = [
        Vehicle(id=f"v{k}", start_location=0, end_location=0, capacity=capacity, **vehicle_kwargs)
        for k in range(n_vehicles)
    ]
    return Problem(duration_s=dur, distance_m=dist, vehicles=vehicles, jobs=jobs, name=f"random{seed}")
