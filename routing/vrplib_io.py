"""Read VRPLIB CVRP / VRPTW instances into a `Problem`, and write routes back in VRPLIB numbering.

Used by the CLI and the benchmarks to compare against published best-known solutions.
Job ids are the customer numbers of VRPLIB `.sol` files (node index in the instance,
depot = 0, not listed), so `routes_as_numbers` output can be diffed with a `.sol`.
Distances follow each family's convention: Solomon (VRPTW) results are reported with
unrounded Euclidean distances, CVRPLIB's X instances with distances rounded to the
nearest integer; `rounding="auto"` picks that by instance type.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import vrplib

from routing.vrp_model import Job, Problem, Solution, Stop, Vehicle


class InstanceError(ValueError):
    """The file is missing, unreadable or not a CVRP/VRPTW instance we understand."""


def read_instance(path: str | Path, *, rounding: str = "auto") -> Problem:
    """A Problem with one delivery job per customer and the instance's fleet at the depot."""
    path = Path(path)
    if not path.is_file():
        raise InstanceError(f"{path}: no such file")
    try:
        data = vrplib.read_instance(str(path))
    except Exception as exc:  # vrplib raises many types on corrupt input
        raise InstanceError(f"{path}: not a readable VRPLIB instance ({type(exc).__name__}: {exc})") from None
    try:
        return _to_problem(data, path, rounding)
    except InstanceError:
        raise
    except Exception as exc:
        raise InstanceError(f"{path}: malformed instance ({type(exc).__name__}: {exc})") from None


def _to_problem(data: dict, path: Path, rounding: str) -> Problem:
    kind = str(data.get("type", "")).upper()
    if "edge_weight" not in data or "demand" not in data or "capacity" not in data:
        raise InstanceError(f"{path}: missing EDGE_WEIGHT/coordinates, DEMAND_SECTION or CAPACITY")
    weights = np.asarray(data["edge_weight"], dtype=float)
    n = int(data.get("dimension", weights.shape[0]))
    if weights.shape != (n, n):
        raise InstanceError(f"{path}: edge weights are {weights.shape}, expected {(n, n)}")
    if rounding == "auto":
        rounding = "none" if ("TW" in kind or "time_window" in data) else "nearest"
    if rounding == "nearest":
        weights = np.rint(weights)
    elif rounding != "none":
        raise InstanceError(f"unknown rounding {rounding!r}")
    depots = np.atleast_1d(data.get("depot", [0]))
    if len(depots) != 1 or int(depots[0]) != 0:
        raise InstanceError(f"{path}: only single-depot instances with the depot first are supported")
    demand = np.asarray(data["demand"], dtype=float)
    capacity = float(np.atleast_1d(data["capacity"])[0])
    windows = np.asarray(data["time_window"], dtype=float) if "time_window" in data else None
    service = data.get("service_time", 0.0)
    service = np.full(n, float(service)) if np.ndim(service) == 0 else np.asarray(service, dtype=float)
    if "vehicles" in data:
        n_vehicles = int(data["vehicles"])
    else:
        # CVRP instances leave the fleet open; one vehicle per customer never binds.
        n_vehicles = n - 1
    horizon = (0.0, math.inf) if windows is None else (float(windows[0, 0]), float(windows[0, 1]))
    vehicles = [
        Vehicle(id=f"v{k + 1}", start_location=0, end_location=0, capacity=(capacity,), shift_s=horizon)
        for k in range(n_vehicles)
    ]
    jobs = []
    for i in range(1, n):
        tw = (0.0, math.inf) if windows is None else (float(windows[i, 0]), float(windows[i, 1]))
        jobs.append(
            Job(id=str(i), delivery=Stop(location=i, service_s=float(service[i]), time_window_s=tw), amount=(float(demand[i]),))
        )
    return Problem(duration_s=weights, distance_m=weights, vehicles=vehicles, jobs=jobs, name=str(data.get("name", path.stem)))


def routes_as_numbers(solution: Solution) -> list[list[int]]:
    """Routes as lists of VRPLIB customer numbers (depot not listed), as in .sol files."""
    return [[int(v.job_id) for v in r.visits] for r in solution.routes if r.visits]


def read_bks(path: str | Path) -> dict[str, dict[str, float]]:
    """bks.csv -> {instance: {column: value}}."""
    import csv

    with open(path, newline="") as fh:
        return {row["instance"]: {k: float(v) for k, v in row.items() if k != "instance"} for row in csv.DictReader(fh)}
