"""Road graph: reading OSM, speeds, simplification, strongly connected component, cache."""

from __future__ import annotations

import bz2
import gzip
import shutil
from functools import lru_cache

import numpy as np
import pytest

from routing import graph, speeds
from tests.paths import OSM

MONACO = OSM / "monaco.osm.pbf"
OAKLAND = OSM / "west-oakland.osm.bz2"


@lru_cache(maxsize=None)
def monaco() -> graph.Graph:
    return graph.build(MONACO, progress=False)


def test_cached_load_returns_identical_arrays(tmp_path, monkeypatch):
    first = graph.load(OAKLAND, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(graph, "build", lambda *a, **k: pytest.fail("cache miss: rebuilt"))
    second = graph.load(OAKLAND, cache_dir=tmp_path, progress=False)
    for name in graph._ARRAY_FIELDS:
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    for name, arr in first.cch.arrays().items():
        assert np.array_equal(arr, second.cch.arrays()[name]), name
    assert second.meta["sha256"] == graph.file_sha256(OAKLAND)


def test_cache_key_follows_content_and_speed_profile(tmp_path):
    copy = tmp_path / "west-oakland.osm.bz2"
    shutil.copy(OAKLAND, copy)
    assert graph.cache_key(copy) == graph.cache_key(OAKLAND)  # content, not path
    assert graph.cache_key(OAKLAND, country="US") != graph.cache_key(OAKLAND)
    copy.write_bytes(bz2.compress(bz2.decompress(OAKLAND.read_bytes()) + b"\n"))
    assert graph.cache_key(copy) != graph.cache_key(OAKLAND)


def test_xml_gz_and_bz2_give_the_same_graph(tmp_path):
    gz = tmp_path / "west-oakland.osm.gz"
    gz.write_bytes(gzip.compress(bz2.decompress(OAKLAND.read_bytes())))
    a = graph.build(OAKLAND, progress=False)
    b = graph.build(gz, progress=False)
    assert np.array_equal(a.tail, b.tail) and np.array_equal(a.time_s, b.time_s)


def test_compiled_arrays_are_compact_csr():
    g = monaco()
    assert g.tail.dtype == np.int32 and g.head.dtype == np.int32
    assert g.time_s.dtype == np.float32 and g.length_m.dtype == np.float32
    assert np.all(np.diff(g.tail) >= 0)
    assert np.array_equal(np.repeat(np.arange(g.n_nodes), np.diff(g.indptr)), g.tail)


def test_graph_is_strongly_connected_and_reports_what_was_dropped():
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    g = monaco()
    adj = csr_matrix((np.ones(g.n_edges), (g.tail, g.head)), shape=(g.n_nodes, g.n_nodes))
    assert connected_components(adj, directed=True, connection="strong")[0] == 1
    dropped = g.meta["dropped"]
    assert 0 < dropped["node_share"] < 0.2 and dropped["nodes"] > 0


def test_drive_filter_keeps_only_drivable_classes():
    g = graph.build(OAKLAND, progress=False)
    names = {speeds.ROAD_CLASSES[c] for c in np.unique(g.road_class)}
    assert names <= {"secondary", "unclassified", "residential", "tertiary", "primary", "living_street", "other"}
    assert "service" not in names  # osmnx's "drive" excludes highway=service


def test_travel_time_is_length_over_speed():
    g = monaco()
    expected = g.length_m / (g.free_speed_kph / 3.6)
    np.testing.assert_allclose(g.time_s, expected, rtol=1e-6)


def test_speed_comes_from_maxspeed_else_road_class():
    prof = speeds.profile("PT")
    assert speeds.parse_maxspeed("50", prof) == 50
    assert speeds.parse_maxspeed("30 mph", prof) == pytest.approx(48.28, abs=0.01)
    assert speeds.parse_maxspeed("PT:urban", prof) == 50
    assert speeds.parse_maxspeed("50;30", prof) == 40
    assert np.isnan(speeds.parse_maxspeed("none", prof)) and np.isnan(speeds.parse_maxspeed(None, prof))
    g = monaco()
    untagged = ~g.speed_tagged
    defaults = speeds.profile("default").class_speeds()[g.road_class[untagged]]
    np.testing.assert_array_equal(g.free_speed_kph[untagged], defaults)
    assert g.speed_tagged.any()


def test_country_profile_changes_default_speeds():
    us = graph.build(OAKLAND, country="US", progress=False)
    default = graph.build(OAKLAND, progress=False)
    res = speeds.CLASS_INDEX["residential"]
    assert us.free_speed_kph[us.road_class == res].max() == 40.0
    assert default.free_speed_kph[default.road_class == res].max() == 30.0


def test_twins_are_the_same_street_reversed():
    g = monaco()
    e = np.flatnonzero(g.twin >= 0)
    t = g.twin[e]
    assert np.array_equal(g.twin[t], e)
    assert np.array_equal(g.tail[e], g.head[t]) and np.array_equal(g.length_m[e], g.length_m[t])
    k = int(e[0])
    a = slice(g.geom_indptr[k], g.geom_indptr[k + 1])
    b = slice(g.geom_indptr[t[0]], g.geom_indptr[t[0] + 1])
    assert np.array_equal(g.geom_lat[a], g.geom_lat[b][::-1])


def test_geometry_ends_at_the_edge_nodes():
    g = monaco()
    first = g.geom_indptr[:-1]
    last = g.geom_indptr[1:] - 1
    assert np.array_equal(g.geom_lat[first], g.lat[g.tail]) and np.array_equal(g.geom_lng[last], g.lng[g.head])


def test_speed_factors_equal_a_fresh_build_with_those_speeds():
    factors = {"residential": 0.5, "primary": 0.7}
    reweighted = monaco().with_speed_factors(factors)
    fresh = graph.build(MONACO, country=speeds.SpeedProfile("default", class_factors=factors), progress=False)
    assert np.array_equal(reweighted.tail, fresh.tail)
    np.testing.assert_allclose(reweighted.time_s, fresh.time_s, rtol=1e-6)
    assert not np.allclose(reweighted.time_s, monaco().time_s)


def test_unknown_road_class_in_speed_factors_is_refused():
    with pytest.raises(graph.GraphError, match="unknown road class"):
        monaco().with_speed_factors({"autobahn": 0.5})


def test_unreadable_or_corrupt_input_gives_a_clear_error(tmp_path):
    with pytest.raises(graph.GraphError, match="no such"):
        graph.load(tmp_path / "nope.osm.pbf", cache_dir=tmp_path)
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(b"this is not a pbf")
    with pytest.raises(graph.GraphError, match="cannot read"):
        graph.build(bad, progress=False)
    bad_xml = tmp_path / "bad.osm.bz2"
    bad_xml.write_bytes(b"not bzip2")
    with pytest.raises(graph.GraphError, match="cannot read"):
        graph.build(bad_xml, progress=False)


def test_a_file_without_roads_is_an_empty_graph_error(tmp_path):
    f = tmp_path / "paths.osm"
    f.write_text(
        '<?xml version="1.0"?><osm version="0.6">'
        '<node id="1" lat="0" lon="0"/><node id="2" lat="0" lon="0.001"/>'
        '<way id="9"><nd ref="1"/><nd ref="2"/><tag k="highway" v="footway"/></way></osm>'
    )
    with pytest.raises(graph.GraphError, match="no drivable road"):
        graph.build(f, progress=False)


def test_corrupt_cache_directory_is_refused(tmp_path):
    g = graph.build(OAKLAND, out=tmp_path / "g", progress=False)
    assert g.n_nodes > 0
    (tmp_path / "g" / graph.GRAPH_FILE).write_bytes(b"garbage")
    with pytest.raises(graph.GraphError, match="corrupt"):
        graph.read_dir(tmp_path / "g")


def _osm_xml(ways: str) -> str:
    """Four nodes on a line ~111 m apart, plus the given ways."""
    nodes = "".join(f'<node id="{i}" lat="0" lon="{0.001 * i}"/>' for i in range(1, 6))
    return f'<?xml version="1.0"?><osm version="0.6">{nodes}{ways}</osm>'


def _way(wid, refs, **tags):
    nds = "".join(f'<nd ref="{r}"/>' for r in refs)
    tg = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
    return f'<way id="{wid}">{nds}{tg}</way>'


def test_reader_applies_osmnx_drive_filter_and_oneway_rules(tmp_path):
    from routing import osm

    f = tmp_path / "t.osm"
    f.write_text(
        _osm_xml(
            _way(1, [1, 2], highway="residential")
            + _way(2, [2, 3], highway="residential", oneway="-1")
            + _way(3, [3, 4], highway="primary", junction="roundabout", maxspeed="70")
            + _way(4, [4, 5], highway="residential", access="private")
            + _way(5, [1, 5], highway="footway")
            + _way(6, [1, 3], highway="service", service="parking_aisle")
        )
    )
    raw = osm.read(f)
    pairs = {(int(raw.node_osm_id[u]), int(raw.node_osm_id[v])): (fw, bw) for u, v, fw, bw in zip(raw.u, raw.v, raw.forward, raw.backward)}
    assert pairs == {(1, 2): (True, True), (2, 3): (False, True), (3, 4): (True, False)}
    assert list(raw.maxspeed) == [None, None, "70"]


def test_simplification_merges_chains_with_equal_speed_and_class_only(tmp_path):
    f = tmp_path / "t.osm"
    f.write_text(
        _osm_xml(
            _way(1, [1, 2, 3], highway="residential")  # 2 is a pass-through node: merged away
            + _way(2, [3, 4], highway="primary")  # class changes at 3: 3 stays a node
            + _way(3, [4, 5, 1], highway="primary")  # closes the ring
        )
    )
    g = graph.build(f, progress=False)
    assert sorted(g.node_osm_id.tolist()) == [1, 3]  # 2 and 4 are pass-through nodes
    res = g.road_class == speeds.CLASS_INDEX["residential"]
    assert np.all(np.diff(g.geom_indptr)[res] == 3)  # the merged edge keeps node 2's vertex
    np.testing.assert_allclose(g.length_m[res], 2 * graph.haversine_m(0, 0, 0, 0.001), rtol=1e-5)


def test_an_unwritable_cache_still_returns_the_graph(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    g = graph.load(OAKLAND, cache_dir=blocker, progress=False)
    assert g.n_nodes > 0


def test_place_names_go_through_osmnx(monkeypatch):
    """Offline stand-in for the online path: osmnx's own XML reader plays graph_from_place."""
    import osmnx as ox

    def fake_graph_from_place(place, network_type, simplify, retain_all):
        assert network_type == "drive" and not simplify
        g = ox.graph_from_xml(OAKLAND, simplify=False, retain_all=True)
        drivable = {"residential", "secondary", "unclassified", "tertiary", "primary"}
        g.remove_edges_from([(u, v, k) for u, v, k, h in g.edges(keys=True, data="highway") if h not in drivable])
        return g

    monkeypatch.setattr(ox, "graph_from_place", fake_graph_from_place)
    from_place = graph.build("place:West Oakland, California", progress=False)
    from_file = graph.build(OAKLAND, progress=False)
    assert from_place.meta["source"] == "place:West Oakland, California"
    assert from_place.n_nodes == from_file.n_nodes and from_place.n_edges == from_file.n_edges
    np.testing.assert_allclose(np.sort(from_place.time_s), np.sort(from_file.time_s), rtol=1e-5)


def test_ways_clipped_at_the_extract_border_lose_only_the_missing_segments(tmp_path):
    from routing import osm

    f = tmp_path / "t.osm"
    f.write_text(_osm_xml(_way(1, [1, 2, 3, 99], highway="residential")))  # node 99 is outside the extract
    raw = osm.read(f)
    assert raw.n_segments == 2 and sorted(raw.node_osm_id.tolist()) == [1, 2, 3]


def test_edge_keys_are_unique_and_find_their_edges_again():
    g = monaco()
    keys = g.edge_keys()
    assert len(np.unique(keys, axis=0)) == g.n_edges
    assert np.array_equal(g.find_edges(keys), np.arange(g.n_edges))
    assert g.find_edges([[1, 2, 3]]).tolist() == [-1]
    # learned speeds stored by key survive a rebuild (here: of the same map, with another speed profile)
    other = graph.build(MONACO, country="US", progress=False)
    e = other.find_edges(keys[:50])
    assert np.all(e >= 0) and np.array_equal(other.edge_keys()[e], keys[:50])
