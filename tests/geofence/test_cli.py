"""`serena geofence classify` end to end on temporary files, and each bad input's message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serena.cli import app

SQUARE = [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1], [13.0, 52.0]]]
RIGHT = [[[[13.05, 52.05], [13.2, 52.05], [13.2, 52.2], [13.05, 52.2], [13.05, 52.05]]]]


def _zones(tmp_path: Path, features: list[dict] | None = None, *, text: str | None = None) -> Path:
    path = tmp_path / "zones.geojson"
    if text is None:
        features = features if features is not None else [
            {"type": "Feature", "properties": {"id": "sq"}, "geometry": {"type": "Polygon", "coordinates": SQUARE}},
            {"type": "Feature", "properties": {"id": "mp"},
             "geometry": {"type": "MultiPolygon", "coordinates": RIGHT}},
        ]
        text = json.dumps({"type": "FeatureCollection", "features": features}, indent=1)
    path.write_text(text)
    return path


def _points(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "points.csv"
    path.write_text(text)
    return path


def _run(zones: Path, points: Path, out: Path):
    return CliRunner().invoke(app, ["geofence", "classify", "--zones", str(zones), "--points", str(points),
                                    "--out", str(out)])


def test_classify_writes_sorted_zone_ids_per_point(tmp_path):
    zones = _zones(tmp_path)
    points = _points(tmp_path, "id,lat,lng\nboth,52.07,13.07\nsq,52.01,13.01\nnone,0,0\n"
                               "vertex,52.0,13.0\nedge,52.05,13.1\n")
    out = tmp_path / "out.csv"
    result = _run(zones, points, out)
    assert result.exit_code == 0, result.output
    assert out.read_text() == "id,zones\nboth,mp;sq\nsq,sq\nnone,\nvertex,sq\nedge,mp;sq\n"


def _error(tmp_path: Path, zones: Path, points: Path) -> str:
    out = tmp_path / "out.csv"
    result = _run(zones, points, out)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert not out.exists()
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


GOOD_POINTS = "id,lat,lng\np,52.01,13.01\n"


def test_missing_file(tmp_path):
    msg = _error(tmp_path, tmp_path / "nope.geojson", _points(tmp_path, GOOD_POINTS))
    assert msg == f"error: {tmp_path / 'nope.geojson'}: no such file"
    msg = _error(tmp_path, _zones(tmp_path), tmp_path / "nope.csv")
    assert msg == f"error: {tmp_path / 'nope.csv'}: no such file"


def test_bad_json_names_the_line(tmp_path):
    zones = _zones(tmp_path, text='{"type": "FeatureCollection",\n "features": [\n  {"type": "Feature",,\n]}')
    msg = _error(tmp_path, zones, _points(tmp_path, GOOD_POINTS))
    assert msg.startswith(f"error: {zones}:3: invalid JSON")


def test_feature_without_id_names_its_line(tmp_path):
    features = [
        {"type": "Feature", "properties": {"id": "sq"}, "geometry": {"type": "Polygon", "coordinates": SQUARE}},
        {"type": "Feature", "properties": {"name": "x"}, "geometry": {"type": "Polygon", "coordinates": SQUARE}},
    ]
    zones = _zones(tmp_path, features)
    msg = _error(tmp_path, zones, _points(tmp_path, GOOD_POINTS))
    assert msg == f"error: {zones}:{_feature_lines(zones)[1]}: feature 1: no 'id' property"


def _feature_lines(zones: Path) -> list[int]:
    """1-based lines where features open (json.dumps(indent=1) puts them at two spaces)."""
    return [n + 1 for n, ln in enumerate(zones.read_text().splitlines()) if ln.startswith("  {")]


def test_non_polygon_feature(tmp_path):
    zones = _zones(tmp_path, [{"type": "Feature", "properties": {"id": "pt"},
                               "geometry": {"type": "Point", "coordinates": [13.0, 52.0]}}])
    msg = _error(tmp_path, zones, _points(tmp_path, GOOD_POINTS))
    assert msg == f"error: {zones}:{_feature_lines(zones)[0]}: feature 0: zone 'pt': geometry must be Polygon or MultiPolygon, not Point"


@pytest.mark.parametrize("text, expected", [
    ("id,lng,lat\np,13.0,52.0\n", ":1: header is 'id,lng,lat', expected 'id,lat,lng'"),
    ("", ":1: empty file; expected header id,lat,lng"),
    ("id,lat,lng\np,52.0,13.0\nq,abc,13.0\n", ":3: lat 'abc' is not a number"),
    ("id,lat,lng\np,52.0,13.0\n\nq,52.0,190\n", ":4: lng '190' is out of range [-180, 180]"),
    ("id,lat,lng\nq,-91,13.0\n", ":2: lat '-91' is out of range [-90, 90]"),
    ("id,lat,lng\nq,nan,13.0\n", ":2: lat 'nan' is not a finite number"),
    ("id,lat,lng\nq,52.0\n", ":2: expected 3 fields (id,lat,lng), got 2"),
])
def test_bad_points_csv_names_the_line(tmp_path, text, expected):
    points = _points(tmp_path, text)
    msg = _error(tmp_path, _zones(tmp_path), points)
    assert msg == f"error: {points}{expected}"


def test_unwritable_output_names_the_output_file(tmp_path):
    out = tmp_path / "missing-dir" / "out.csv"
    result = _run(_zones(tmp_path), _points(tmp_path, GOOD_POINTS), out)
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {out}: No such file or directory"


def test_duplicate_and_invalid_zones_name_their_lines(tmp_path):
    bowtie = [[[13.0, 52.0], [13.1, 52.1], [13.1, 52.0], [13.0, 52.1], [13.0, 52.0]]]
    features = [
        {"type": "Feature", "properties": {"id": "sq"}, "geometry": {"type": "Polygon", "coordinates": SQUARE}},
        {"type": "Feature", "properties": {"id": "sq"}, "geometry": {"type": "Polygon", "coordinates": SQUARE}},
    ]
    zones = _zones(tmp_path, features)
    msg = _error(tmp_path, zones, _points(tmp_path, GOOD_POINTS))
    assert msg == f"error: {zones}:{_feature_lines(zones)[1]}: feature 1: duplicate id 'sq' (also feature 0)"
    zones = _zones(tmp_path, [{"type": "Feature", "properties": {"id": "bow"},
                               "geometry": {"type": "Polygon", "coordinates": bowtie}}])
    msg = _error(tmp_path, zones, _points(tmp_path, GOOD_POINTS))
    assert msg.startswith(f"error: {zones}:{_feature_lines(zones)[0]}: feature 0: zone 'bow' is not a valid polygon")
