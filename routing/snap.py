"""Snap coordinates to the road network: nearest street piece, projected point, offset along it.

Snapping to the nearest *edge* rather than the nearest node matters: a customer
in the middle of a 400 m block is 200 m from either corner, and routing from the
corner misstates travel times by tens of seconds and the approach direction.
A snapped point is (edge, fraction along it); `routing.matrix` and
`routing.paths` route from/to that position exactly, in both directions where the
street is two-way (`Graph.twin`).

Geometry is projected to a local equirectangular plane around the graph's centre
(metres). Over a city (< 50 km) its distortion is below 0.1 %, and it keeps the
nearest-segment search a plain 2-D problem for a k-d tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from routing.graph import EARTH_RADIUS_M, Graph

DEFAULT_MAX_DISTANCE_M = 500.0
# Long segments are sampled every SAMPLE_M for the k-d tree; a segment at distance
# d from a query then has a sample within d + SAMPLE_M / 2, which bounds the search.
SAMPLE_M = 25.0


class SnapError(ValueError):
    """A point is too far from any road (or not a valid coordinate)."""


@dataclass
class Snapped:
    """Positions on the network, one row per input point (all arrays same length)."""

    edge: np.ndarray  # int32: directed edge the point lies on (its twin, if any, is the other direction)
    fraction: np.ndarray  # float64 in [0, 1]: position along `edge`, by length
    offset_m: np.ndarray  # float64: distance along `edge` from its tail, metres
    distance_m: np.ndarray  # float64: from the input point to the road, metres
    lat: np.ndarray  # float64: the projected point on the road
    lng: np.ndarray

    def __len__(self) -> int:
        return len(self.edge)

    def __getitem__(self, idx) -> "Snapped":
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return Snapped(*(getattr(self, f)[idx] for f in ("edge", "fraction", "offset_m", "distance_m", "lat", "lng")))


class _Index:
    """Segments of every street piece (one direction of each twin pair) in a k-d tree."""

    def __init__(self, g: Graph):
        self.lat0 = float(np.mean(g.lat))
        self.lng0 = float(np.mean(g.lng))
        self.kx = np.radians(1.0) * EARTH_RADIUS_M * np.cos(np.radians(self.lat0))
        self.ky = np.radians(1.0) * EARTH_RADIUS_M
        primary = np.flatnonzero((g.twin < 0) | (np.arange(g.n_edges) < g.twin))
        starts, ends = g.geom_indptr[primary], g.geom_indptr[primary + 1]
        nseg = ends - starts - 1
        # segment k goes from vertex p to p+1 of edge seg_edge[k]
        seg_edge = np.repeat(primary, nseg)
        first = np.repeat(starts - np.concatenate([[0], np.cumsum(nseg)[:-1]]), nseg)
        p = first + np.arange(nseg.sum())
        x, y = self.project(g.geom_lat, g.geom_lng)
        self.ax, self.ay, self.bx, self.by = x[p], y[p], x[p + 1], y[p + 1]
        seg_len = np.hypot(self.bx - self.ax, self.by - self.ay)
        # projected length of each edge before each segment, for the fraction along the edge
        csum = np.cumsum(seg_len)
        edge_first_seg = np.concatenate([[0], np.cumsum(nseg)[:-1]])
        before_edge = np.repeat(csum[edge_first_seg] - seg_len[edge_first_seg], nseg)
        self.before = csum - seg_len - before_edge
        edge_len = np.zeros(g.n_edges)
        edge_len[primary] = np.add.reduceat(seg_len, edge_first_seg) if len(seg_len) else 0.0
        self.edge_len = edge_len
        self.seg_len = seg_len
        self.seg_edge = seg_edge.astype(np.int64)
        pieces = np.maximum(1, np.ceil(seg_len / SAMPLE_M)).astype(np.int64)
        sample_seg = np.repeat(np.arange(len(seg_len)), pieces)
        k = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        t = (k + 0.5) / pieces[sample_seg]
        sx = self.ax[sample_seg] + t * (self.bx - self.ax)[sample_seg]
        sy = self.ay[sample_seg] + t * (self.by - self.ay)[sample_seg]
        self.sample_seg = sample_seg
        self.tree = cKDTree(np.column_stack([sx, sy]))

    def project(self, lat, lng):
        return (np.asarray(lng, np.float64) - self.lng0) * self.kx, (np.asarray(lat, np.float64) - self.lat0) * self.ky

    def unproject(self, x, y):
        return y / self.ky + self.lat0, x / self.kx + self.lng0

    def seg_distance(self, segs, qx, qy):
        """Distance from each query to each given segment and the clamped parameter t along it."""
        dx, dy = self.bx[segs] - self.ax[segs], self.by[segs] - self.ay[segs]
        l2 = dx * dx + dy * dy
        t = np.where(l2 > 0, ((qx - self.ax[segs]) * dx + (qy - self.ay[segs]) * dy) / np.where(l2 > 0, l2, 1), 0.0)
        t = np.clip(t, 0.0, 1.0)
        px, py = self.ax[segs] + t * dx, self.ay[segs] + t * dy
        return np.hypot(qx - px, qy - py), t


def _index(g: Graph) -> _Index:
    if g._snap_index is None:
        g._snap_index = _Index(g)
    return g._snap_index


def snap(g: Graph, lat, lng, *, max_distance_m: float | None = DEFAULT_MAX_DISTANCE_M, k: int = 16) -> Snapped:
    """Snap points (arrays or scalars of degrees) to their nearest road position.

    Raises SnapError naming the first point farther than `max_distance_m` from
    any road (None disables the check), or a point that is not a coordinate.
    """
    lat = np.atleast_1d(np.asarray(lat, np.float64))
    lng = np.atleast_1d(np.asarray(lng, np.float64))
    if lat.shape != lng.shape or lat.ndim != 1:
        raise SnapError("lat and lng must be 1-D and the same length")
    bad = ~(np.isfinite(lat) & np.isfinite(lng) & (np.abs(lat) <= 90) & (np.abs(lng) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SnapError(f"point {i} ({lat[i]}, {lng[i]}) is not a valid lat/lng")
    ix = _index(g)
    qx, qy = ix.project(lat, lng)
    n = len(lat)
    k = min(k, ix.tree.n)
    sd, si = ix.tree.query(np.column_stack([qx, qy]), k=k)
    sd, si = sd.reshape(n, k), si.reshape(n, k)
    segs = ix.sample_seg[si]
    dist, t = ix.seg_distance(segs, qx[:, None], qy[:, None])
    best = np.argmin(dist, axis=1)
    rows = np.arange(n)
    best_seg = segs[rows, best]
    best_t = t[rows, best]
    best_d = dist[rows, best]
    # Exactness: if a closer segment could exist beyond the k-th sample, search a ball.
    unsure = sd[:, -1] <= best_d + SAMPLE_M / 2
    for i in np.flatnonzero(unsure):
        cand = ix.sample_seg[ix.tree.query_ball_point([qx[i], qy[i]], best_d[i] + SAMPLE_M / 2)]
        cand = np.unique(np.append(cand, best_seg[i]))
        d_i, t_i = ix.seg_distance(cand, qx[i], qy[i])
        j = int(np.argmin(d_i))
        best_seg[i], best_t[i], best_d[i] = cand[j], t_i[j], d_i[j]
    if max_distance_m is not None:
        far = best_d > max_distance_m
        if far.any():
            i = int(np.flatnonzero(far)[0])
            raise SnapError(
                f"point {i} ({lat[i]:.6f}, {lng[i]:.6f}) is {best_d[i]:.0f} m from the nearest road "
                f"(limit {max_distance_m:.0f} m){f'; {int(far.sum())} points are too far' if far.sum() > 1 else ''}"
            )
    return _positions(g, ix, best_seg, best_t, best_d)


def _positions(g: Graph, ix: _Index, seg: np.ndarray, t: np.ndarray, dist_m: np.ndarray) -> Snapped:
    """Snapped rows for points at parameter t along index segments `seg`."""
    edge = ix.seg_edge[seg]
    along = ix.before[seg] + t * ix.seg_len[seg]
    el = ix.edge_len[edge]
    fraction = np.clip(np.where(el > 0, along / np.where(el > 0, el, 1), 0.0), 0.0, 1.0)
    ax, ay = ix.ax[seg], ix.ay[seg]
    px = ax + t * (ix.bx[seg] - ax)
    py = ay + t * (ix.by[seg] - ay)
    plat, plng = ix.unproject(px, py)
    return Snapped(
        edge=edge.astype(np.int32),
        fraction=fraction,
        offset_m=fraction * g.length_m[edge].astype(np.float64),
        distance_m=np.asarray(dist_m, np.float64),
        lat=plat,
        lng=plng,
    )


def candidates(g: Graph, lat, lng, *, radius_m: float = 50.0, max_per_point: int = 8) -> tuple[np.ndarray, Snapped]:
    """Every street piece within `radius_m` of each point, nearest first, at most `max_per_point` per point.

    For map matching (an HMM needs several candidate roads per GPS fix, not just
    the nearest). Returns (point index of each candidate, candidate positions);
    a point with no road in range has no rows. Route between candidates exactly
    with `routing.matrix.travel_matrix(g, candidates_a, candidates_b)`.
    """
    lat = np.atleast_1d(np.asarray(lat, np.float64))
    lng = np.atleast_1d(np.asarray(lng, np.float64))
    ix = _index(g)
    qx, qy = ix.project(lat, lng)
    found = ix.tree.query_ball_point(np.column_stack([qx, qy]), r=radius_m + SAMPLE_M / 2)
    counts = np.fromiter((len(f) for f in found), np.int64, len(found))
    point = np.repeat(np.arange(len(lat)), counts)
    samples = np.fromiter((x for f in found for x in f), np.int64, int(counts.sum()))
    seg = ix.sample_seg[samples]
    d, t = ix.seg_distance(seg, qx[point], qy[point])
    near = d <= radius_m
    point, seg, d, t = point[near], seg[near], d[near], t[near]
    # one row per (point, street piece): its nearest segment
    edge = ix.seg_edge[seg]
    order = np.lexsort((d, edge, point))
    point, seg, d, t, edge = point[order], seg[order], d[order], t[order], edge[order]
    first = np.ones(len(point), bool)
    first[1:] = (point[1:] != point[:-1]) | (edge[1:] != edge[:-1])
    point, seg, d, t = point[first], seg[first], d[first], t[first]
    order = np.lexsort((d, point))
    point, seg, d, t = point[order], seg[order], d[order], t[order]
    start = np.searchsorted(point, point)  # first row of each point's group
    keep = np.arange(len(point)) - start < max_per_point
    return point[keep], _positions(g, ix, seg[keep], t[keep], d[keep])


def at_nodes(g: Graph, nodes) -> Snapped:
    """Positions exactly at graph nodes (fraction 0 on an outgoing edge, else 1 on an incoming one)."""
    nodes = np.atleast_1d(np.asarray(nodes, np.int64))
    out_deg = np.diff(g.indptr)
    has_out = out_deg[nodes] > 0
    edge = np.where(has_out, g.indptr[nodes], 0)
    if not has_out.all():  # impossible in a strongly connected graph with > 1 node, kept for safety
        incoming = np.full(g.n_nodes, -1, np.int64)
        incoming[g.head] = np.arange(g.n_edges)
        edge = np.where(has_out, edge, incoming[nodes])
    fraction = np.where(has_out, 0.0, 1.0)
    return Snapped(
        edge=edge.astype(np.int32),
        fraction=fraction,
        offset_m=fraction * g.length_m[edge],
        distance_m=np.zeros(len(nodes)),
        lat=g.lat[nodes].copy(),
        lng=g.lng[nodes].copy(),
    )
