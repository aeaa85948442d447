"""`serena graph build|info` and `serena route matrix|path`: outputs and one-line errors."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from serena.cli import app
from tests.paths import OSM

MONACO = str(OSM / "monaco.osm.pbf")
OAKLAND = str(OSM / "west-oakland.osm.bz2")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SERENA_GRAPH_CACHE", str(tmp_path / "cache"))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _assert_clean_error(result, text):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "error: " in result.output and text in result.output


def test_build_then_info(tmp_path):
    out = tmp_path / "oak"
    r = run("graph", "build", OAKLAND, "--out", out)
    assert r.exit_code == 0, r.output
    assert "nodes" in r.output and (out / "graph.npz").is_file()
    r = run("graph", "info", out)
    assert r.exit_code == 0, r.output
    for word in ("nodes", "edges", "bbox", "dropped", "residential"):
        assert word in r.output
    info = json.loads(run("graph", "info", out, "--json").output)
    assert info["nodes"] > 0 and 0 <= info["dropped"]["node_share"] < 1


def test_build_of_a_corrupt_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(b"\x00garbage")
    _assert_clean_error(run("graph", "build", bad), "cannot read")
    _assert_clean_error(run("graph", "build", tmp_path / "missing.osm.pbf"), "no such")
    _assert_clean_error(run("graph", "info", tmp_path), "not a graph directory")


def _points(tmp_path, rows):
    f = tmp_path / "points.csv"
    f.write_text("id,lat,lng\n" + "".join(f"{i},{a},{b}\n" for i, a, b in rows))
    return f


def test_route_matrix_csv_and_json(tmp_path):
    pts = _points(tmp_path, [("a", 43.7384, 7.4246), ("b", 43.7311, 7.4197), ("c", 43.7450, 7.4300)])
    r = run("route", "matrix", MONACO, pts)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert len(rows) == 9 and {"from_id", "to_id", "time_s", "distance_m"} <= set(rows[0])
    assert float(next(x for x in rows if x["from_id"] == "a" and x["to_id"] == "b")["time_s"]) > 0
    out = tmp_path / "m.json"
    r = run("route", "matrix", MONACO, pts, "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["sources"] == ["a", "b", "c"] and len(doc["time_s"]) == 3 and doc["time_s"][0][0] == 0


def test_route_matrix_refuses_points_off_the_network(tmp_path):
    pts = _points(tmp_path, [("a", 43.7384, 7.4246), ("far", 43.0, 7.0)])
    _assert_clean_error(run("route", "matrix", MONACO, pts), "m from the nearest road")


def test_route_matrix_refuses_a_bad_csv(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("name,x,y\n1,2,3\n")
    _assert_clean_error(run("route", "matrix", MONACO, f), "missing column")
    f.write_text("id,lat,lng\na,north,7\n")
    _assert_clean_error(run("route", "matrix", MONACO, f), "line 2")


def test_route_path_prints_geojson(tmp_path):
    r = run("route", "path", MONACO, "--from", "43.7384,7.4246", "--to", "43.7311,7.4197")
    assert r.exit_code == 0, r.output
    feature = json.loads(r.stdout)
    assert feature["geometry"]["type"] == "LineString" and feature["properties"]["time_s"] > 0
    _assert_clean_error(run("route", "path", MONACO, "--from", "43.7384", "--to", "43.7311,7.4197"), "LAT,LNG")


def test_route_matrix_from_a_graph_directory_time_only(tmp_path):
    out = tmp_path / "mon"
    assert run("graph", "build", MONACO, "--out", out).exit_code == 0
    pts = _points(tmp_path, [("a", 43.7384, 7.4246), ("b", 43.7311, 7.4197)])
    targets = tmp_path / "t.csv"
    targets.write_text("id,lat,lng\nx,43.7450,7.4300\n")
    r = run("route", "matrix", out, pts, "--targets", targets, "--no-distances")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "from_id,to_id,time_s" and len(lines) == 3 and lines[1].startswith("a,x,")


def test_graph_build_of_a_file_without_roads_is_a_one_line_error(tmp_path):
    f = tmp_path / "paths.osm"
    f.write_text('<?xml version="1.0"?><osm version="0.6"><node id="1" lat="0" lon="0"/></osm>')
    _assert_clean_error(run("graph", "build", f), "no drivable road")
