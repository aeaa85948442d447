"""A seeded delivery day on a real road graph: one depot, N deliveries, M vans, road travel times.

Used by `serena route plan-map` to show the engine end to end (graph → matrix → VRP → routes
drawn on the map) and by its tests. Deliveries are spread over the graph's nodes (so over
the streets, dense where the streets are); each has a 2-hour window in an 8-hour day,
3 minutes of service and a parcel of 1–20 kg; vans carry 400 kg.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routing import matrix
from routing.graph import Graph
from routing.vrp_model import Job, Problem, Stop, Vehicle


@dataclass
class Scenario:
    problem: Problem
    depot: tuple[float, float]
    stops_latlng: np.ndarray  # (n, 2), row i = job f"d{i}"


def delivery_day(g: Graph, *, deliveries: int, vans: int, seed: int = 0, day_s: float = 8 * 3600) -> Scenario:
    rng = np.random.default_rng(seed)
    if deliveries < 1 or vans < 1:
        raise ValueError("need at least one delivery and one van")
    centre = np.array([np.median(g.lat), np.median(g.lng)])
    # The depot: the node nearest the middle of the map.
    d_node = int(np.argmin((g.lat - centre[0]) ** 2 + (g.lng - centre[1]) ** 2))
    nodes = rng.choice(np.delete(np.arange(g.n_nodes), d_node), size=deliveries, replace=deliveries > g.n_nodes - 1)
    pts = np.vstack([[g.lat[d_node], g.lng[d_node]], np.column_stack([g.lat[nodes], g.lng[nodes]])])
    m = matrix.travel_matrix(g, pts, max_snap_m=None)
    jobs = []
    for i in range(deliveries):
        start = float(rng.uniform(0, day_s - 2 * 3600))
        jobs.append(Job(id=f"d{i}", delivery=Stop(location=i + 1, service_s=180.0, time_window_s=(start, start + 2 * 3600)),
                        amount=(float(rng.uniform(1, 20)),)))
    fleet = [Vehicle(id=str(k + 1), start_location=0, end_location=0, capacity=(400.0,), shift_s=(0.0, day_s + 3600))
             for k in range(vans)]
    problem = Problem(duration_s=m.time_s, distance_m=m.distance_m, vehicles=fleet, jobs=jobs, name="delivery-day")
    return Scenario(problem=problem, depot=(float(pts[0, 0]), float(pts[0, 1])), stops_latlng=pts[1:])
