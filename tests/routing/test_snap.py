"""Snapping points to road edges: projection, offsets, far points."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from routing import graph, snap
from tests.paths import OSM


@lru_cache(maxsize=None)
def monaco() -> graph.Graph:
    return graph.build(OSM / "monaco.osm.pbf", progress=False)


def _offset_point(g, edge: int, fraction: float, side_m: float):
    """A point side_m metres to the left of edge's geometry at `fraction` of its length (local plane)."""
    ix = snap._index(g)
    b, e = g.geom_indptr[edge], g.geom_indptr[edge + 1]
    x, y = ix.project(g.geom_lat[b:e], g.geom_lng[b:e])
    seg = np.hypot(np.diff(x), np.diff(y))
    cum = np.concatenate([[0], np.cumsum(seg)])
    target = fraction * cum[-1]
    i = min(int(np.searchsorted(cum, target, side="right")) - 1, len(seg) - 1)
    t = (target - cum[i]) / seg[i]
    px, py = x[i] + t * (x[i + 1] - x[i]), y[i] + t * (y[i + 1] - y[i])
    nx, ny = -(y[i + 1] - y[i]) / seg[i], (x[i + 1] - x[i]) / seg[i]
    lat, lng = ix.unproject(px + side_m * nx, py + side_m * ny)
    return lat, lng, ix.unproject(px, py)


def test_point_beside_a_street_snaps_onto_it_with_offset_along_it():
    g = monaco()
    ix = snap._index(g)
    # a long street piece whose point at 40 % has no other street within 20 m
    for edge in np.flatnonzero(g.length_m > 120).tolist():
        lat, lng, (plat, plng) = _offset_point(g, edge, 0.4, 3.0)
        qx, qy = ix.project(lat, lng)
        d, _ = ix.seg_distance(np.arange(len(ix.ax)), qx, qy)
        own = np.isin(ix.seg_edge, [edge, g.twin[edge]])
        if d[~own].min() > 20:
            break
    s = snap.snap(g, lat, lng)
    assert int(s.edge[0]) in (edge, int(g.twin[edge]))
    frac = s.fraction[0] if s.edge[0] == edge else 1 - s.fraction[0]
    assert frac == pytest.approx(0.4, abs=1e-3)
    assert s.offset_m[0] == pytest.approx(s.fraction[0] * g.length_m[s.edge[0]])
    assert s.distance_m[0] == pytest.approx(3.0, abs=0.05)
    assert graph.haversine_m(s.lat[0], s.lng[0], plat, plng) < 0.05


def test_snapping_is_vectorised_and_matches_brute_force():
    g = monaco()
    rng = np.random.default_rng(7)
    lat = rng.uniform(g.lat.min(), g.lat.max(), 2000)
    lng = rng.uniform(g.lng.min(), g.lng.max(), 2000)
    s = snap.snap(g, lat, lng, max_distance_m=None)
    ix = snap._index(g)
    qx, qy = ix.project(lat, lng)
    for i in range(0, 2000, 40):  # brute force over every segment for a sample
        d, _ = ix.seg_distance(np.arange(len(ix.ax)), qx[i], qy[i])
        assert s.distance_m[i] == pytest.approx(d.min(), abs=1e-6)


def test_far_points_are_refused_with_a_clear_error():
    g = monaco()
    with pytest.raises(snap.SnapError, match=r"point 1 .* m from the nearest road \(limit 500 m\)"):
        snap.snap(g, [g.lat[0], 43.0], [g.lng[0], 7.42])
    s = snap.snap(g, [43.0], [7.42], max_distance_m=None)
    assert s.distance_m[0] > 50_000


def test_limit_is_configurable():
    g = monaco()
    lat, lng, _ = _offset_point(g, int(np.argmax(g.length_m)), 0.5, 40.0)
    with pytest.raises(snap.SnapError):
        snap.snap(g, lat, lng, max_distance_m=10)
    assert snap.snap(g, lat, lng, max_distance_m=100).distance_m[0] <= 40.0 + 1e-6


def test_invalid_coordinates_are_refused():
    g = monaco()
    with pytest.raises(snap.SnapError, match="not a valid lat/lng"):
        snap.snap(g, [95.0], [7.4])
    with pytest.raises(snap.SnapError, match="not a valid lat/lng"):
        snap.snap(g, [float("nan")], [7.4])


def test_points_at_nodes_sit_at_the_ends_of_edges():
    g = monaco()
    s = snap.at_nodes(g, [0, 5, 10])
    assert np.all(g.tail[s.edge] == [0, 5, 10]) and np.all(s.fraction == 0)


def test_candidates_list_every_street_in_range_nearest_first():
    g = monaco()
    rng = np.random.default_rng(3)
    lat = g.lat[:50] + rng.normal(0, 1e-4, 50)
    lng = g.lng[:50] + rng.normal(0, 1e-4, 50)
    point, cand = snap.candidates(g, lat, lng, radius_m=60, max_per_point=5)
    nearest = snap.snap(g, lat, lng, max_distance_m=None)
    ix = snap._index(g)
    for i in range(50):
        rows = np.flatnonzero(point == i)
        assert len(rows) <= 5 and np.all(np.diff(cand.distance_m[rows]) >= 0)
        assert np.all(cand.distance_m[rows] <= 60)
        if nearest.distance_m[i] <= 60:
            assert cand.distance_m[rows[0]] == pytest.approx(nearest.distance_m[i])
        # completeness: count street pieces within 60 m by brute force
        qx, qy = ix.project(lat[i], lng[i])
        d, _ = ix.seg_distance(np.arange(len(ix.ax)), qx, qy)
        assert len(rows) == min(5, len(np.unique(ix.seg_edge[d <= 60])))
