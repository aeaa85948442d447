"""Point-to-point fastest paths with their road geometry (GeoJSON), time and distance.

A path runs from a snapped origin to a snapped destination: the rest of the
origin's edge, whole edges found by the hierarchy (`routing.ch.point_to_point`,
unpacked to original edges), then the start of the destination's edge. Its
geometry follows every OSM vertex, cut at the two snapped positions, so drawing
it on a map and summing its pieces give the same route the time was computed for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routing import ch, matrix, snap as snap_mod
from routing.graph import Graph, haversine_m


class NoPathError(ValueError):
    """No drivable path between the two points (cannot happen within one strongly connected graph)."""


@dataclass
class Path:
    """A fastest path between two positions."""

    time_s: float
    distance_m: float
    edges: np.ndarray  # int32: directed edges driven, in order (first/last possibly partly)
    first_fraction: float  # where on edges[0] the path starts
    last_fraction: float  # where on edges[-1] the path ends
    lat: np.ndarray  # float64: geometry, degrees
    lng: np.ndarray
    legs_time_s: list[float] | None = None  # per leg, for a path through waypoints (`route_via`)
    legs_distance_m: list[float] | None = None

    def to_geojson(self) -> dict:
        """A GeoJSON Feature: LineString [lng, lat] with time_s / distance_m properties."""
        props = {
            "time_s": round(float(self.time_s), 3),
            "distance_m": round(float(self.distance_m), 2),
            "edges": int(len(self.edges)),
        }
        if self.legs_time_s is not None:
            props["legs_time_s"] = [round(float(t), 3) for t in self.legs_time_s]
            props["legs_distance_m"] = [round(float(d), 2) for d in self.legs_distance_m or []]
        return {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[float(x), float(y)] for x, y in zip(self.lng, self.lat)]},
            "properties": props,
        }


def _edge_piece(g: Graph, e: int, f0: float, f1: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of edge e between fractions f0 <= f1 of its length (interpolated ends)."""
    b, end = g.geom_indptr[e], g.geom_indptr[e + 1]
    la, ln = g.geom_lat[b:end], g.geom_lng[b:end]
    if f0 <= 0.0 and f1 >= 1.0:
        return la, ln
    seg = haversine_m(la[:-1], ln[:-1], la[1:], ln[1:])
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1] if cum[-1] > 0 else 1.0
    pos = cum / total

    def at(f: float) -> tuple[float, float]:
        i = int(np.clip(np.searchsorted(pos, f, side="right") - 1, 0, len(pos) - 2))
        span = pos[i + 1] - pos[i]
        t = (f - pos[i]) / span if span > 0 else 0.0
        return la[i] + t * (la[i + 1] - la[i]), ln[i] + t * (ln[i + 1] - ln[i])

    inner = (pos > f0) & (pos < f1)
    a, z = at(f0), at(f1)
    return np.concatenate([[a[0]], la[inner], [z[0]]]), np.concatenate([[a[1]], ln[inner], [z[1]]])


def route(
    g: Graph,
    origin,
    destination,
    *,
    max_snap_m: float | None = snap_mod.DEFAULT_MAX_DISTANCE_M,
) -> Path:
    """The fastest path from `origin` to `destination`: (lat, lng) pairs or 1-element `Snapped`."""
    if isinstance(origin, snap_mod.Snapped) and isinstance(destination, snap_mod.Snapped):
        o, d = origin, destination
    elif isinstance(origin, snap_mod.Snapped) or isinstance(destination, snap_mod.Snapped):
        o = origin if isinstance(origin, snap_mod.Snapped) else snap_mod.snap(g, origin[0], origin[1], max_distance_m=max_snap_m)
        d = destination if isinstance(destination, snap_mod.Snapped) else snap_mod.snap(
            g, destination[0], destination[1], max_distance_m=max_snap_m
        )
    else:  # one snap call for both ends: half the fixed cost of a k-d tree query
        both = snap_mod.snap(g, [origin[0], destination[0]], [origin[1], destination[1]], max_distance_m=max_snap_m)
        o, d = both[0], both[1]
    sn, st, sd = matrix.source_seeds(g, o)
    tn, tt, td = matrix.target_seeds(g, d)
    m, c = g.metric, g.cch
    best_t, best_d, meet, up_arcs, down_arcs = ch.point_to_point(
        c.up_indptr, c.up_head, c.parent, m.up_time, m.up_dist, m.down_time, m.down_dist,
        sn[0], st[0], sd[0], tn[0], tt[0], td[0],
    )
    oe0, de0 = int(o.edge[0]), int(d.edge[0])
    if oe0 == de0 or oe0 == int(g.twin[de0]):  # same street piece: driving straight along it may win
        rows, _cols, ts, ds = matrix.same_street(g, o, d)
        if len(rows) and ts[0] <= best_t:
            return _direct(g, o, d, float(ts[0]), float(ds[0]))
    if meet < 0 or not np.isfinite(best_t):
        raise NoPathError("no drivable path between the two points")
    middle = ch.unpack(c.up_indptr, c.up_head, m.up_mid, m.down_mid, m.up_edge, m.down_edge, up_arcs, down_arcs)
    meet_node = int(c.order[meet])
    start_node = int(g.tail[middle[0]]) if len(middle) else meet_node
    end_node = int(g.head[middle[-1]]) if len(middle) else meet_node
    # Which direction of the origin's street did we leave by, which of the destination's did we arrive by?
    oe, of = int(o.edge[0]), float(o.fraction[0])
    # The search starts at one of the origin's seeds: head of its edge, or head of the twin (= tail).
    if start_node == int(g.head[oe]):
        first_edge, first_frac = oe, of
    elif g.twin[oe] >= 0:
        first_edge, first_frac = int(g.twin[oe]), 1 - of
    else:  # one-way edge, position at its tail node: nothing of this edge is driven
        first_edge, first_frac = -1, 0.0
    de_, df_ = int(d.edge[0]), float(d.fraction[0])
    if end_node == int(g.tail[de_]):
        last_edge, last_frac = de_, df_
    elif g.twin[de_] >= 0:
        last_edge, last_frac = int(g.twin[de_]), 1 - df_
    else:
        last_edge, last_frac = -1, 1.0
    lats, lngs, edges = [], [], []
    if first_edge >= 0 and first_frac < 1.0:
        la, ln = _edge_piece(g, first_edge, first_frac, 1.0)
        lats.append(la)
        lngs.append(ln)
        edges.append(first_edge)
    if len(middle):
        # Whole edges: one gather of all their vertices, dropping each edge's first
        # vertex (the previous edge's last) except for the very first one.
        starts = g.geom_indptr[middle] + 1
        counts = g.geom_indptr[middle + 1] - starts
        idx = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        if not lats:
            idx = np.concatenate([[starts[0] - 1], idx])
        lats.append(g.geom_lat[idx])
        lngs.append(g.geom_lng[idx])
        edges.extend(middle.tolist())
    if last_edge >= 0 and last_frac > 0.0:
        la, ln = _edge_piece(g, last_edge, 0.0, last_frac)
        lats.append(la[1:] if lats else la)
        lngs.append(ln[1:] if lngs else ln)
        edges.append(last_edge)
    if not lats:  # both positions on the same node
        lats, lngs = [o.lat[:1], d.lat[:1]], [o.lng[:1], d.lng[:1]]
    return Path(
        time_s=float(best_t),
        distance_m=float(best_d),
        edges=np.asarray(edges, np.int32),
        first_fraction=first_frac if first_edge >= 0 and first_frac < 1.0 else 0.0,
        last_fraction=last_frac if last_edge >= 0 and last_frac > 0.0 else 1.0,
        lat=np.concatenate(lats),
        lng=np.concatenate(lngs),
    )


def _direct(g: Graph, o: snap_mod.Snapped, d: snap_mod.Snapped, time_s: float, distance_m: float) -> Path:
    """Both positions on one street piece, driven straight along it."""
    e, f0 = int(o.edge[0]), float(o.fraction[0])
    de, f1 = int(d.edge[0]), float(d.fraction[0])
    if de != e:  # destination stated on the twin: restate on e
        f1 = 1 - f1
    if f1 < f0:  # behind us: drive the twin
        e, f0, f1 = int(g.twin[e]), 1 - f0, 1 - f1
    la, ln = _edge_piece(g, e, f0, f1)
    return Path(time_s, distance_m, np.asarray([e], np.int32), f0, f1, la, ln)


def route_via(
    g: Graph,
    waypoints,
    *,
    max_snap_m: float | None = snap_mod.DEFAULT_MAX_DISTANCE_M,
) -> Path:
    """The fastest path through waypoints in order ((n, 2) lat/lng, n >= 2), e.g. a driver's planned stops.

    One path whose geometry runs through every leg; `legs_time_s` / `legs_distance_m`
    give each leg, so a dispatcher can show per-stop ETAs along the drawn route.
    """
    pts = np.asarray(waypoints, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise snap_mod.SnapError("waypoints must be an (n, 2) array of lat, lng with n >= 2")
    pos = snap_mod.snap(g, pts[:, 0], pts[:, 1], max_distance_m=max_snap_m)
    legs = [route(g, pos[i], pos[i + 1]) for i in range(len(pts) - 1)]
    lat = np.concatenate([legs[0].lat] + [leg.lat[1:] for leg in legs[1:]])
    lng = np.concatenate([legs[0].lng] + [leg.lng[1:] for leg in legs[1:]])
    return Path(
        time_s=float(sum(leg.time_s for leg in legs)),
        distance_m=float(sum(leg.distance_m for leg in legs)),
        edges=np.concatenate([leg.edges for leg in legs]),
        first_fraction=legs[0].first_fraction,
        last_fraction=legs[-1].last_fraction,
        lat=lat,
        lng=lng,
        legs_time_s=[leg.time_s for leg in legs],
        legs_distance_m=[leg.distance_m for leg in legs],
    )
