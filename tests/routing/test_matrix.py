"""Exact many-to-many matrices: equal to plain Dijkstra (scipy) on nodes and on snapped positions."""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from routing import graph, matrix, snap
from tests.paths import OSM


@lru_cache(maxsize=None)
def monaco() -> graph.Graph:
    return graph.build(OSM / "monaco.osm.pbf", progress=False)


def _csr(n, tail, head, w):
    """Adjacency with the smallest weight per parallel pair (csr_matrix would *sum* duplicates)."""
    order = np.lexsort((w, head, tail))
    t, h, w = tail[order], head[order], np.asarray(w, np.float64)[order]
    first = np.ones(len(t), bool)
    first[1:] = (t[1:] != t[:-1]) | (h[1:] != h[:-1])
    return csr_matrix((w[first], (t[first], h[first])), shape=(n, n))


def _random_points(g, n, seed):
    rng = np.random.default_rng(seed)
    lat = rng.uniform(g.lat.min(), g.lat.max(), n)
    lng = rng.uniform(g.lng.min(), g.lng.max(), n)
    return snap.snap(g, lat, lng, max_distance_m=None)


def _dijkstra_with_points_inserted(g, pos: snap.Snapped, weight):
    """Reference: split every edge at the positions on it, add them as nodes, run scipy Dijkstra."""
    n = g.n_nodes
    w = getattr(g, weight).astype(np.float64)
    on_edge = defaultdict(list)  # directed edge -> [(fraction, point)]
    for p, (e, f) in enumerate(zip(pos.edge.tolist(), pos.fraction.tolist())):
        on_edge[e].append((f, p))
        if g.twin[e] >= 0:
            on_edge[int(g.twin[e])].append((1 - f, p))
    tails, heads, ws = [], [], []
    for e in range(g.n_edges):
        stops = sorted(on_edge.get(e, []))
        if not stops:
            tails.append(g.tail[e])
            heads.append(g.head[e])
            ws.append(w[e])
            continue
        prev_node, prev_f = int(g.tail[e]), 0.0
        for f, p in stops:
            tails.append(prev_node)
            heads.append(n + p)
            ws.append((f - prev_f) * w[e])
            if f == prev_f and prev_node >= n:  # two points at one position: the same place
                tails.append(n + p)
                heads.append(prev_node)
                ws.append(0.0)
            prev_node, prev_f = n + p, f
        tails.append(prev_node)
        heads.append(int(g.head[e]))
        ws.append((1 - prev_f) * w[e])
    # zero-weight edges vanish in a sparse matrix: nudge them, within the test tolerance
    ws = np.maximum(np.asarray(ws), 1e-9)
    a = _csr(n + len(pos), np.asarray(tails), np.asarray(heads), ws)
    return dijkstra(a, indices=n + np.arange(len(pos)))[:, n:]


def test_node_matrix_equals_scipy_dijkstra_on_random_pairs():
    g = monaco()
    rng = np.random.default_rng(3)
    src = rng.integers(0, g.n_nodes, 60)
    dst = rng.integers(0, g.n_nodes, 200)
    m = matrix.node_matrix(g, src, dst)
    ref = dijkstra(_csr(g.n_nodes, g.tail, g.head, g.time_s), indices=src)[:, dst]
    np.testing.assert_allclose(m.time_s, ref, rtol=1e-9, atol=1e-9)


def test_matrix_between_snapped_points_equals_dijkstra_with_the_points_inserted():
    g = monaco()
    pos = _random_points(g, 150, seed=11)
    m = matrix.travel_matrix(g, pos)
    ref = _dijkstra_with_points_inserted(g, pos, "time_s")
    np.testing.assert_allclose(m.time_s, ref, rtol=1e-7, atol=1e-6)
    assert np.all(np.diag(m.time_s) == 0)


def test_points_on_the_same_street_get_the_direct_drive():
    g = monaco()
    e = int(np.flatnonzero((g.twin >= 0) & (g.length_m > 100))[0])
    pos = snap.Snapped(
        edge=np.array([e, e], np.int32), fraction=np.array([0.2, 0.7]), offset_m=np.zeros(2),
        distance_m=np.zeros(2), lat=np.zeros(2), lng=np.zeros(2),
    )
    m = matrix.travel_matrix(g, pos)
    assert m.time_s[0, 1] == pytest.approx(0.5 * g.time_s[e])
    assert m.time_s[1, 0] == pytest.approx(0.5 * g.time_s[g.twin[e]])


def test_distances_are_those_of_the_fastest_paths():
    g = monaco()
    rng = np.random.default_rng(5)
    src = rng.integers(0, g.n_nodes, 20)
    dst = rng.integers(0, g.n_nodes, 50)
    m = matrix.node_matrix(g, src, dst)
    a = _csr(g.n_nodes, g.tail, g.head, g.time_s)
    _, pred = dijkstra(a, indices=src, return_predecessors=True)
    # length of the (fastest) parallel edge for each node pair
    best = {}
    for e in np.argsort(g.time_s, kind="stable")[::-1]:
        best[(int(g.tail[e]), int(g.head[e]))] = float(g.length_m[e])
    for i in range(len(src)):
        for j, t in enumerate(dst):
            d, v = 0.0, int(t)
            while v != src[i]:
                u = int(pred[i, v])
                d += best[(u, v)]
                v = u
            assert m.distance_m[i, j] == pytest.approx(d, rel=1e-6, abs=1e-3)


def test_time_only_matrix_skips_distances():
    g = monaco()
    pos = _random_points(g, 30, seed=2)
    full = matrix.travel_matrix(g, pos)
    fast = matrix.travel_matrix(g, pos, distances=False)
    assert fast.distance_m is None
    np.testing.assert_array_equal(fast.time_s, full.time_s)


def test_rectangular_matrix_from_lat_lng_arrays():
    g = monaco()
    pts = np.column_stack([g.lat[:7], g.lng[:7]])
    m = matrix.travel_matrix(g, pts[:3], pts[3:])
    assert m.time_s.shape == (3, 4) and np.all(np.isfinite(m.time_s))


def test_weight_update_changes_results_exactly_as_a_fresh_hierarchy():
    g = monaco()
    rng = np.random.default_rng(9)
    edges = rng.choice(g.n_edges, 300, replace=False)
    new_times = g.time_s[edges] * rng.uniform(0.5, 3.0, len(edges)).astype(np.float32)
    updated = g.update_weights(edges, new_times)
    # fresh: the same times compiled from scratch (new order, contraction and customization)
    from routing import ch

    fresh = graph.Graph(**{k: getattr(updated, k) for k in graph._ARRAY_FIELDS}, cch=ch.contract(
        g.n_nodes, g.tail, g.head, ch.nested_dissection_order(g.n_nodes, g.tail, g.head)))
    pos = _random_points(g, 80, seed=4)
    a = matrix.travel_matrix(updated, pos).time_s
    b = matrix.travel_matrix(fresh, pos).time_s
    np.testing.assert_allclose(a, b, rtol=1e-9)
    np.testing.assert_allclose(a, _dijkstra_with_points_inserted(updated, pos, "time_s"), rtol=1e-7, atol=1e-6)
    assert not np.allclose(a, matrix.travel_matrix(g, pos).time_s)
    assert np.array_equal(g.time_s, monaco().time_s)  # the original graph is untouched


def test_speed_factors_slow_down_the_named_classes_only():
    g = monaco()
    slow = g.with_speed_factors({"residential": 0.5})
    res = g.road_class == graph.speeds.CLASS_INDEX["residential"]
    np.testing.assert_allclose(slow.time_s[res], 2 * g.time_s[res], rtol=1e-6)
    np.testing.assert_array_equal(slow.time_s[~res], g.time_s[~res])


def test_parallel_and_single_threaded_kernels_agree(monkeypatch):
    from routing import ch

    g = monaco()
    pos = _random_points(g, 100, seed=8)
    monkeypatch.setattr(ch, "PARALLEL_MIN_WORK", 0)
    par = matrix.travel_matrix(g, pos)
    monkeypatch.setattr(ch, "PARALLEL_MIN_WORK", 10**18)
    ser = matrix.travel_matrix(g, pos)
    np.testing.assert_array_equal(par.time_s, ser.time_s)
    np.testing.assert_array_equal(par.distance_m, ser.distance_m)


def test_csv_and_json_writers_format_fixed_decimals():
    import io
    import json

    ts = np.array([[0.0, 1.5, 1234.5675], [np.inf, 0.0004, 99999.9995]])
    ds = np.array([[0.0, 10.04, 7.26], [3.0, 0.0, 1e6]])
    m = matrix.Matrix(ts, ds, None, None)
    out = io.BytesIO()
    matrix.write_csv(m, out, ["a", "b"], ["x", "y", "z"])
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "from_id,to_id,time_s,distance_m"
    assert lines[3] == "a,z,1234.568,7.3" and lines[4] == "b,x,inf,3.0" and lines[6] == "b,z,100000.000,1000000.0"
    assert json.loads(matrix.json_array(ts, 3)) == [[0.0, 1.5, 1234.568], [None, 0.0, 100000.0]]
    with pytest.raises(ValueError, match="comma"):
        matrix.write_csv(m, io.BytesIO(), ["a,b", "c"], ["x", "y", "z"])


def test_rush_hour_graph_is_slower_on_arterials_and_cached_per_factor_set():
    g = monaco()
    day = graph.TimeOfDay(g)
    assert day.at(3) is g  # no factors at night
    rush = day.at(8)
    assert day.at(8) is rush and day.at(17) is rush  # same peak factors, one customisation
    primary = g.road_class == graph.speeds.CLASS_INDEX["primary"]
    np.testing.assert_allclose(rush.time_s[primary], g.time_s[primary] / 0.65, rtol=1e-5)
    pos = _random_points(g, 20, seed=1)
    assert np.all(matrix.travel_matrix(rush, pos).time_s >= matrix.travel_matrix(g, pos).time_s - 1e-9)
    with pytest.raises(ValueError):
        day.at(24)
