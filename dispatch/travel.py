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
    """Exact road travel times on a compiled graph (routing engine), with a matrix cache.

    Successive plans ask for nearly the same points (the depot, the same drop-offs, vans
    that moved a little), so the model keeps the matrix of every point it has seen and only
    computes the rows and columns of new points: inserting one job costs one row and one
    column, not the whole square. The cache is dropped when it grows past `max_points`.
    """

    def __init__(self, graph, *, max_points: int = 6000) -> None:
        self.graph = graph
        self.name = "road graph"
        self.max_points = max_points
        self._index: dict[tuple[float, float], int] = {}
        self._lat = np.zeros(0)
        self._lng = np.zeros(0)
        self._time = np.zeros((0, 0))
        self._dist = np.zeros((0, 0))

    def _compute(self, src_lat, src_lng, dst_lat, dst_lng) -> tuple[np.ndarray, np.ndarray]:
        from routing import matrix

        src = np.column_stack([src_lat, src_lng])
        dst = np.column_stack([dst_lat, dst_lng])
        # No snap limit: a drop-off 300 m from the nearest drivable road (a pedestrian zone)
        # is still served from that road; refusing it would drop a paid order.
        m = matrix.travel_matrix(self.graph, src, dst, max_snap_m=None)
        return (np.where(np.isfinite(m.time_s), m.time_s, 1e7), np.where(np.isfinite(m.distance_m), m.distance_m, 1e8))

    def matrix(self, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat, lng = np.asarray(lat, float), np.asarray(lng, float)
        keys = [(round(a, 6), round(b, 6)) for a, b in zip(lat, lng, strict=True)]
        new = list(dict.fromkeys(k for k in keys if k not in self._index))
        if len(self._index) + len(new) > self.max_points:
            self._index, self._lat, self._lng = {}, np.zeros(0), np.zeros(0)
            self._time, self._dist = np.zeros((0, 0)), np.zeros((0, 0))
            new = list(dict.fromkeys(keys))
        if new:
            n_old = len(self._index)
            nlat = np.array([k[0] for k in new])
            nlng = np.array([k[1] for k in new])
            all_lat = np.concatenate([self._lat, nlat])
            all_lng = np.concatenate([self._lng, nlng])
            t_new_all, d_new_all = self._compute(nlat, nlng, all_lat, all_lng)  # new → everything
            n = n_old + len(new)
            time_s = np.empty((n, n))
            dist_m = np.empty((n, n))
            time_s[:n_old, :n_old] = self._time
            dist_m[:n_old, :n_old] = self._dist
            time_s[n_old:, :] = t_new_all
            dist_m[n_old:, :] = d_new_all
            if n_old:
                t_old_new, d_old_new = self._compute(self._lat, self._lng, nlat, nlng)  # old → new
                time_s[:n_old, n_old:] = t_old_new
                dist_m[:n_old, n_old:] = d_old_new
            for i, k in enumerate(new):
                self._index[k] = n_old + i
            self._lat, self._lng, self._time, self._dist = all_lat, all_lng, time_s, dist_m
        idx = np.array([self._index[k] for k in keys], dtype=np.int64)
        return self._time[np.ix_(idx, idx)], self._dist[np.ix_(idx, idx)]


@lru_cache(maxsize=4)
def model_for(source: str):
    """The travel model for a `dispatch_graph` setting ("" → straight line)."""
    if not source:
        return StraightLine()
    from routing import graph

    g = graph.default_city(progress=False) if source == "default" else graph.load(source, progress=False)
    log.info("planning on road graph %s (%d nodes)", source, g.n_nodes)
    return RoadGraph(g)
