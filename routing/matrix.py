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

import numba as nb
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

    `distances=False` skips the distance matrix (`distance_m` is then None; saves memory, little time).

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


# ----------------------------------------------------------------------------- output
# A 2000 x 2000 matrix is 4M CSV rows; Python-level formatting (csv, pandas,
# numpy string ufuncs) spends 5-10 s of CPU on it, longer than routing. These
# numba kernels write fixed-point decimals straight into a byte buffer.


@nb.njit(cache=True)
def _put_number(buf, pos, x, decimals, scale, null):
    if not np.isfinite(x):
        for c in null:
            buf[pos] = c
            pos += 1
        return pos
    if x < 0:
        buf[pos] = 45  # '-'
        pos += 1
        x = -x
    r = np.int64(np.floor(x * scale + 0.5))
    ip = r // np.int64(scale)
    fp = r - ip * np.int64(scale)
    # integer part, most significant digit first
    start = pos
    if ip == 0:
        buf[pos] = 48
        pos += 1
    while ip > 0:
        buf[pos] = 48 + ip % 10
        ip //= 10
        pos += 1
    buf[start:pos] = buf[start:pos][::-1].copy()
    if decimals > 0:
        buf[pos] = 46  # '.'
        pos += 1
        for k in range(decimals - 1, -1, -1):
            buf[pos + k] = 48 + fp % 10
            fp //= 10
        pos += decimals
    return pos


@nb.njit(cache=True)
def _csv_rows(buf, s_begin, s_end, src_bytes, src_off, dst_bytes, dst_off, time_s, dist_m, with_dist, null):
    pos = 0
    for s in range(s_begin, s_end):
        for t in range(time_s.shape[1]):
            for k in range(src_off[s], src_off[s + 1]):
                buf[pos] = src_bytes[k]
                pos += 1
            buf[pos] = 44
            pos += 1
            for k in range(dst_off[t], dst_off[t + 1]):
                buf[pos] = dst_bytes[k]
                pos += 1
            buf[pos] = 44
            pos += 1
            pos = _put_number(buf, pos, time_s[s, t], 3, 1000.0, null)
            if with_dist:
                buf[pos] = 44
                pos += 1
                pos = _put_number(buf, pos, dist_m[s, t], 1, 10.0, null)
            buf[pos] = 10
            pos += 1
    return pos


@nb.njit(cache=True)
def _json_rows(buf, s_begin, s_end, values, decimals, scale, null):
    pos = 0
    for s in range(s_begin, s_end):
        if s > 0:
            buf[pos] = 44
            pos += 1
        buf[pos] = 91  # '['
        pos += 1
        for t in range(values.shape[1]):
            if t > 0:
                buf[pos] = 44
                pos += 1
            pos = _put_number(buf, pos, values[s, t], decimals, scale, null)
        buf[pos] = 93  # ']'
        pos += 1
    return pos


def _encode_ids(ids) -> tuple[np.ndarray, np.ndarray]:
    enc = [str(i).encode() for i in ids]
    for e in enc:
        if b"," in e or b'"' in e or b"\n" in e:
            raise ValueError(f"point id {e.decode()!r} contains a comma, quote or newline")
    off = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(e) for e in enc], out=off[1:])
    return np.frombuffer(b"".join(enc) or b"\0", np.uint8)[: max(off[-1], 0)].copy(), off


def write_csv(m: Matrix, fh, source_ids, target_ids, *, rows_per_chunk: int = 64) -> None:
    """Long-format CSV `from_id,to_id,time_s[,distance_m]` (s to 1 ms, m to 0.1 m) to a binary file object."""
    src_b, src_off = _encode_ids(source_ids)
    dst_b, dst_off = _encode_ids(target_ids)
    with_dist = m.distance_m is not None
    fh.write(b"from_id,to_id,time_s" + (b",distance_m" if with_dist else b"") + b"\n")
    S, T = m.time_s.shape
    dist = m.distance_m if with_dist else m.time_s
    max_src = int(np.diff(src_off).max()) if S else 0
    max_dst = int(np.diff(dst_off).max()) if T else 0
    buf = np.empty(rows_per_chunk * max(T, 1) * (max_src + max_dst + 64), np.uint8)
    null = np.frombuffer(b"inf", np.uint8)
    for s0 in range(0, S, rows_per_chunk):
        n = _csv_rows(buf, s0, min(S, s0 + rows_per_chunk), src_b, src_off, dst_b, dst_off, m.time_s, dist, with_dist, null)
        fh.write(buf[:n].tobytes())


def json_array(values: np.ndarray, decimals: int) -> bytes:
    """A 2-D array as JSON nested lists with fixed decimals (null for inf/NaN)."""
    S, T = values.shape
    buf = np.empty(S * (T * 24 + 4) + 2, np.uint8)
    buf[0] = 91
    n = _json_rows(buf[1:], 0, S, values, decimals, float(10**decimals), np.frombuffer(b"null", np.uint8))
    buf[n + 1] = 93
    return buf[: n + 2].tobytes()
