"""Travel times for planning: the road graph when one is configured, a straight-line estimate otherwise.

The planner asks for a square matrix over a handful of points (vehicle positions, depots,
drop-offs). On a road graph this is `routing.matrix.travel_matrix` (exact, milliseconds for
hundreds of points); without one (tests, a city whose extract is not loaded yet) it falls
back to great-circle distance × a detour factor at a city speed, which is labelled as an
estimate wherever it is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8


def haversine_matrix_m(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lng)
    dla = la[:, None] - la[None, :]
    dlo = lo[:, None] - lo[None, :]
    a = np.sin(dla / 2) ** 2 + np.cos(la)[:, None] * np.cos(la)[None, :] * np.sin(dlo / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


@dataclass
class StraightLine:
    """Great-circle distance × detour, at a constant speed: an estimate, not a route."""

    speed_mps: float = 8.0  # ~29 km/h, urban average with stops
    detour: float = 1.3  # road distance / straight-line distance, typical of city grids
    name: str = "straight-line estimate"

    def matrix(self, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = haversine_matrix_m(np.asarray(lat, float), np.asarray(lng, float)) * self.detour
        return dist / self.speed_mps, dist


class RoadGraph:
    """Exact road travel times on a compiled graph (routing engine)."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.name = "road graph"

    def matrix(self, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from routing import matrix

        pts = np.column_stack([np.asarray(lat, float), np.asarray(lng, float)])
        # No snap limit here: a drop-off 300 m from the nearest drivable road (a pedestrian
        # zone) is still served from that road; refusing it would drop a paid order.
        m = matrix.travel_matrix(self.graph, pts, max_snap_m=None)
        time_s = np.where(np.isfinite(m.time_s), m.time_s, 1e7)
        dist = np.where(np.isfinite(m.distance_m), m.distance_m, 1e8)
        return time_s, dist


@lru_cache(maxsize=4)
def model_for(source: str):
    """The travel model for a `dispatch_graph` setting ("" → straight line)."""
    if not source:
        return StraightLine()
    from routing import graph

    g = graph.default_city(progress=False) if source == "default" else graph.load(source, progress=False)
    log.info("planning on road graph %s (%d nodes)", source, g.n_nodes)
    return RoadGraph(g)
