"""Exact many-to-many travel-time and distance matrices between points on the road network.

Points are snapped to edges (`routing.snap`); a point part-way along an edge
enters the hierarchy at the edge's ends with the partial edge's time as the
initial cost (and at the twin's ends on two-way streets), and two points on the
same street piece also get the direct drive between them. The result is the
exact fastest travel time between the two *positions*, equal to Dijkstra on a
graph with the points inserted as nodes. Distances are those of the fastest
path, not the shortest distance (what a driver following the route covers).

The heavy lifting is `routing.ch.many_to_many` (numba, all cores); this module
turns points into seeds and handles the same-street special case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routing import ch, snap as snap_mod
from routing.graph import Graph


@dataclass
class Matrix:
    """Fastest-path travel times and their distances; row = source, column = target."""

    time_s: np.ndarray  # float64 (S, T); inf where unreachable
    distance_m: np.ndarray | None  # float64 (S, T); None when not asked for
    sources: snap_mod.Snapped
    targets: snap_mod.Snapped


def source_seeds(g: Graph, pos: snap_mod.Snapped) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank (k,2), time_s (k,2), distance_m (k,2)) with which each position reaches the graph, leaving it."""
    e = pos.edge.astype(np.int64)
    f = pos.fraction
    tw = g.twin[e].astype(np.int64)
    has = tw >= 0
    twc = np.where(has, tw, 0)
    node = np.full((len(e), 2), -1, np.int32)
    t = np.full((len(e), 2), np.inf)
    d = np.full((len(e), 2), np.inf)
    node[:, 0] = g.cch.rank[g.head[e]]
    t[:, 0] = (1 - f) * g.time_s[e]
    d[:, 0] = (1 - f) * g.length_m[e]
    node[:, 1] = np.where(has, g.cch.rank[g.head[twc]], -1)
    t[:, 1] = np.where(has, f * g.time_s[twc], np.inf)
    d[:, 1] = np.where(has, f * g.length_m[twc], np.inf)
    # A position exactly at the tail of a one-way edge is at that node: it may leave by any edge.
    at_tail = ~has & (f == 0)
    node[at_tail, 1] = g.cch.rank[g.tail[e[at_tail]]]
    t[at_tail, 1] = 0.0
    d[at_tail, 1] = 0.0
    return node, t, d


def target_seeds(g: Graph, pos: snap_mod.Snapped) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank (k,2), time_s (k,2), distance_m (k,2)) from the graph's nodes to each position, arriving."""
    e = pos.edge.astype(np.int64)
    f = pos.fraction
    tw = g.twin[e].astype(np.int64)
    has = tw >= 0
    twc = np.where(has, tw, 0)
    node = np.full((len(e), 2), -1, np.int32)
    t = np.full((len(e), 2), np.inf)
    d = np.full((len(e), 2), np.inf)
    node[:, 0] = g.cch.rank[g.tail[e]]
    t[:, 0] = f * g.time_s[e]
    d[:, 0] = f * g.length_m[e]
    node[:, 1] = np.where(has, g.cch.rank[g.tail[twc]], -1)
    t[:, 1] = np.where(has, (1 - f) * g.time_s[twc], np.inf)
    d[:, 1] = np.where(has, (1 - f) * g.length_m[twc], np.inf)
    # Exactly at the head of a one-way edge: reachable through any edge into that node.
    at_head = ~has & (f == 1)
    node[at_head, 1] = g.cch.rank[g.head[e[at_head]]]
    t[at_head, 1] = 0.0
    d[at_head, 1] = 0.0
    return node, t, d


def _canonical(g: Graph, pos: snap_mod.Snapped) -> tuple[np.ndarray, np.ndarray]:
    """(street piece id, fraction along it): a position on a twin is restated on the lower-numbered edge."""
    e = pos.edge.astype(np.int64)
    tw = g.twin[e].astype(np.int64)
    flip = (tw >= 0) & (tw < e)
    return np.where(flip, tw, e), np.where(flip, 1 - pos.fraction, pos.fraction)


def same_street(g: Graph, src: snap_mod.Snapped, dst: snap_mod.Snapped):
    """Direct drives between positions on the same street piece: (rows, cols, time_s, distance_m)."""
    se, sf = _canonical(g, src)
    de, df = _canonical(g, dst)
    order = np.argsort(de, kind="stable")
    de_sorted = de[order]
    rows, cols, ts, ds = [], [], [], []
    for i in np.flatnonzero(np.isin(se, de)):
        lo, hi = np.searchsorted(de_sorted, se[i]), np.searchsorted(de_sorted, se[i], side="right")
        for j in order[lo:hi]:
            p = se[i]
            delta = df[j] - sf[i]
            # Along p when the target is ahead; along its twin when behind (two-way only).
            if delta >= 0:
                edge, frac = p, delta
            elif g.twin[p] >= 0:
                edge, frac = g.twin[p], -delta
            else:
                continue
            rows.append(i)
            cols.append(j)
            ts.append(frac * float(g.time_s[edge]))
            ds.append(frac * float(g.length_m[edge]))
    return np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(ts), np.asarray(ds)


def _as_positions(g: Graph, points, max_snap_m: float | None) -> snap_mod.Snapped:
    if isinstance(points, snap_mod.Snapped):
        return points
    arr = np.asarray(points, np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise snap_mod.SnapError("points must be an (n, 2) array of lat, lng")
    return snap_mod.snap(g, arr[:, 0], arr[:, 1], max_distance_m=max_snap_m)


def travel_matrix(
    g: Graph,
    sources,
    targets=None,
    *,
    max_snap_m: float | None = snap_mod.DEFAULT_MAX_DISTANCE_M,
    distances: bool = True,
) -> Matrix:
    """Exact travel times (s) and distances (m) from every source to every target.

    `distances=False` skips the distance matrix (about half the work; `distance_m` is then None).

    `sources` / `targets` are `Snapped` positions or (n, 2) arrays of lat, lng
    (snapped here, refusing points beyond `max_snap_m`). `targets=None` means
    the same as sources (a square matrix with zeros on the diagonal).
    """
    src = _as_positions(g, sources, max_snap_m)
    dst = src if targets is None else _as_positions(g, targets, max_snap_m)
    if len(src) == 0 or len(dst) == 0:
        z = np.zeros((len(src), len(dst)))
        return Matrix(z, z.copy(), src, dst)
    m = g.metric
    c = g.cch
    sn, st, sd = source_seeds(g, src)
    tn, tt, td = target_seeds(g, dst)
    time_s, dist_m = ch.many_to_many(
        c.up_indptr, c.up_head, c.parent, m.up_time, m.up_dist, m.down_time, m.down_dist, sn, st, sd, tn, tt, td,
        distances, ch.tight_down(c, m),
    )
    rows, cols, ts, ds = same_street(g, src, dst)
    better = ts < time_s[rows, cols]
    time_s[rows[better], cols[better]] = ts[better]
    dist_m[rows[better], cols[better]] = ds[better]
    if not distances:
        dist_m = None
    return Matrix(time_s=time_s, distance_m=dist_m, sources=src, targets=dst)


def node_matrix(g: Graph, source_nodes, target_nodes) -> Matrix:
    """Travel times (s) and distances (m) between graph nodes (ids into `g.lat`)."""
    return travel_matrix(g, snap_mod.at_nodes(g, source_nodes), snap_mod.at_nodes(g, target_nodes))
