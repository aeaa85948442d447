"""Point-to-point paths: same answer as the matrix, connected, geometry consistent with time."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from routing import graph, matrix, paths, snap
from tests.paths import OSM


@lru_cache(maxsize=None)
def monaco() -> graph.Graph:
    return graph.build(OSM / "monaco.osm.pbf", progress=False)


@lru_cache(maxsize=None)
def sample():
    g = monaco()
    rng = np.random.default_rng(21)
    pts = np.column_stack([rng.uniform(g.lat.min(), g.lat.max(), 40), rng.uniform(g.lng.min(), g.lng.max(), 40)])
    pos = snap.snap(g, pts[:, 0], pts[:, 1], max_distance_m=None)
    return pos, matrix.travel_matrix(g, pos)


def _edge_time(g, p: paths.Path) -> float:
    """Travel time recomputed from the path's edges and its partial first / last edges."""
    t = g.time_s[p.edges].astype(np.float64)
    if len(p.edges) == 1:
        return float(t[0] * (p.last_fraction - p.first_fraction))
    t[0] *= 1 - p.first_fraction
    t[-1] *= p.last_fraction
    return float(t.sum())


def test_path_time_equals_the_matrix_entry_and_its_edges():
    g = monaco()
    pos, m = sample()
    for i in range(0, 40, 3):
        for j in range(1, 40, 7):
            p = paths.route(g, pos[i], pos[j])
            assert p.time_s == pytest.approx(m.time_s[i, j], abs=1e-6)
            assert p.distance_m == pytest.approx(m.distance_m[i, j], abs=1e-3)
            if len(p.edges):
                assert _edge_time(g, p) == pytest.approx(p.time_s, rel=1e-6, abs=1e-4)


def test_path_edges_are_connected_and_geometry_runs_between_the_snapped_points():
    g = monaco()
    pos, _ = sample()
    p = paths.route(g, pos[0], pos[5])
    assert np.array_equal(g.head[p.edges[:-1]], g.tail[p.edges[1:]])
    assert graph.haversine_m(p.lat[0], p.lng[0], pos.lat[0], pos.lng[0]) < 1.0
    assert graph.haversine_m(p.lat[-1], p.lng[-1], pos.lat[5], pos.lng[5]) < 1.0
    length = graph.haversine_m(p.lat[:-1], p.lng[:-1], p.lat[1:], p.lng[1:]).sum()
    assert length == pytest.approx(p.distance_m, rel=0.01)


def test_path_along_one_street_is_the_direct_piece():
    g = monaco()
    e = int(np.flatnonzero((g.twin >= 0) & (g.length_m > 100))[0])
    a = snap.Snapped(np.array([e], np.int32), np.array([0.2]), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1))
    b = snap.Snapped(np.array([e], np.int32), np.array([0.6]), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1))
    p = paths.route(g, a, b)
    assert list(p.edges) == [e] and p.time_s == pytest.approx(0.4 * g.time_s[e])
    back = paths.route(g, b, a)
    assert list(back.edges) == [g.twin[e]] and back.time_s == pytest.approx(0.4 * g.time_s[g.twin[e]])


def test_geojson_is_a_linestring_feature_with_time_and_distance():
    g = monaco()
    p = paths.route(g, (43.7384, 7.4246), (43.7311, 7.4197))
    f = p.to_geojson()
    assert f["type"] == "Feature" and f["geometry"]["type"] == "LineString"
    lng, lat = f["geometry"]["coordinates"][0]
    assert 7.3 < lng < 7.5 and 43.6 < lat < 43.8
    assert f["properties"]["time_s"] > 0 and f["properties"]["distance_m"] > 0


def test_route_refuses_points_off_the_network():
    with pytest.raises(snap.SnapError):
        paths.route(monaco(), (43.0, 7.42), (43.7311, 7.4197))


def test_route_via_waypoints_sums_its_legs():
    g = monaco()
    pos, m = sample()
    stops = [0, 4, 9, 13]
    p = paths.route_via(g, np.column_stack([pos.lat[stops], pos.lng[stops]]))
    legs = [m.time_s[a, b] for a, b in zip(stops[:-1], stops[1:])]
    np.testing.assert_allclose(p.legs_time_s, legs, atol=1e-6)
    assert p.time_s == pytest.approx(sum(legs), abs=1e-6)
    assert p.to_geojson()["properties"]["legs_time_s"] == [round(x, 3) for x in p.legs_time_s]
    with pytest.raises(snap.SnapError):
        paths.route_via(g, [[43.73, 7.42]])
