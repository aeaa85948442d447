"""ZoneIndex answers exactly what shapely answers (boundary counts as inside), at every size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from geofence import Zone, ZoneError, ZoneIndex
from geofence.predicates import orientation_index

LAT0, LNG0 = 52.52, 13.40
M_PER_DEG = 111_320.0


def _pairs_ours(index: ZoneIndex, lat: np.ndarray, lng: np.ndarray) -> set[tuple[int, str]]:
    m = index.classify(lat_deg=lat, lng_deg=lng)
    pts = np.repeat(np.arange(len(lat)), m.counts())
    return {(int(p), m.zone_ids[s]) for p, s in zip(pts, m.zone_slots)}


def _pairs_shapely(zones: list[Zone], lat: np.ndarray, lng: np.ndarray) -> set[tuple[int, str]]:
    tree = shapely.STRtree([z.geometry for z in zones])
    p, z = tree.query(shapely.points(lng, lat), predicate="intersects")
    return {(int(a), zones[b].zone_id) for a, b in zip(p, z)}


def _edge_points(zones: list[Zone], rng: np.random.Generator, *, offsets_m: list[float]):
    """Vertices, points interpolated on edges, and points offsets_m off edges."""
    lat, lng = [], []
    for z in zones:
        for ring in shapely.get_rings(shapely.get_parts(z.geometry)):
            xy = shapely.get_coordinates(ring)
            a, b = xy[:-1], xy[1:]
            lat.append(a[:, 1])
            lng.append(a[:, 0])
            for _ in range(3):
                t = rng.uniform(0, 1, (len(a), 1))
                on = a + (b - a) * t
                lat.append(on[:, 1])
                lng.append(on[:, 0])
                for off in offsets_m:
                    ang = rng.uniform(0, 2 * np.pi, len(a))
                    lat.append(on[:, 1] + off * np.sin(ang) / M_PER_DEG)
                    lng.append(on[:, 0] + off * np.cos(ang) / (M_PER_DEG * math.cos(math.radians(LAT0))))
            mid = (a + b) / 2.0
            lat.append(mid[:, 1])
            lng.append(mid[:, 0])
    return np.concatenate(lat), np.concatenate(lng)


@pytest.fixture(scope="module")
def mixed_zones() -> list[Zone]:
    rng = np.random.default_rng(3)
    zones = [
        Zone.circle(zone_id="dropoff-20m", lat_deg=LAT0, lng_deg=LNG0, radius_m=20.0),
        Zone.circle(zone_id="zone-20km", lat_deg=LAT0 + 0.01, lng_deg=LNG0 - 0.02, radius_m=20_000.0,
                    kind="delivery", segments=96),
        Zone.circle(zone_id="depot-300m", lat_deg=LAT0 - 0.05, lng_deg=LNG0 + 0.1, radius_m=300.0),
    ]
    outer = shapely.Point(LNG0 + 0.05, LAT0 + 0.05).buffer(0.03, quad_segs=6)
    hole = shapely.Point(LNG0 + 0.055, LAT0 + 0.05).buffer(0.012, quad_segs=5)
    zones.append(Zone.from_geometry(zone_id="with-hole", geometry=outer.difference(hole)))
    zones.append(Zone.from_geometry(zone_id="multi", geometry=shapely.MultiPolygon([
        shapely.box(LNG0 - 0.2, LAT0 - 0.1, LNG0 - 0.18, LAT0 - 0.08),
        shapely.box(LNG0 - 0.17, LAT0 - 0.1, LNG0 - 0.15, LAT0 - 0.08)])))
    # Irregular polygons with jittered vertices, some overlapping the big zone.
    for k in range(20):
        c = rng.uniform(-0.15, 0.15, 2)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 12))
        r = rng.uniform(0.002, 0.02, 12)
        xy = np.column_stack([LNG0 + c[0] + r * np.cos(ang), LAT0 + c[1] + r * np.sin(ang)])
        zones.append(Zone.from_geometry(zone_id=f"poly-{k}", geometry=shapely.Polygon(xy)))
    return zones


@pytest.mark.parametrize("resolution", [7, 9, 11])
def test_classification_matches_shapely_on_random_and_edge_points(mixed_zones, resolution):
    rng = np.random.default_rng(resolution)
    if resolution >= 11:  # 600k cells for the 20 km zone: slow to build, nothing new to learn
        mixed_zones = [z for z in mixed_zones if z.zone_id != "zone-20km"]
    index = ZoneIndex(mixed_zones, resolution=resolution)
    n = 30_000
    lat_r = rng.uniform(LAT0 - 0.25, LAT0 + 0.25, n)
    lng_r = rng.uniform(LNG0 - 0.35, LNG0 + 0.35, n)
    lat_e, lng_e = _edge_points(mixed_zones, rng, offsets_m=[0.01, 0.05, 0.5, 3.0])
    lat = np.concatenate([lat_r, lat_e])
    lng = np.concatenate([lng_r, lng_e])
    ours = _pairs_ours(index, lat, lng)
    theirs = _pairs_shapely(mixed_zones, lat, lng)
    assert ours == theirs
    assert len(theirs) > n // 10  # the test is not vacuous


def test_points_exactly_on_vertices_and_edges_count_as_inside():
    square = Zone.from_geometry(zone_id="sq", geometry=shapely.box(13.0, 52.0, 13.01, 52.01))
    index = ZoneIndex([square])
    lat = np.array([52.0, 52.01, 52.005, 52.0, 52.005, 52.01 + 1e-12, 52.005])
    lng = np.array([13.0, 13.01, 13.0, 13.005, 13.01, 13.005, 13.01 + 1e-12])
    got = [bool(c) for c in index.classify(lat_deg=lat, lng_deg=lng).counts()]
    assert got == [True, True, True, True, True, False, False]


def test_hole_is_outside_and_hole_boundary_is_inside():
    outer = shapely.box(13.0, 52.0, 13.02, 52.02)
    hole = shapely.box(13.005, 52.005, 13.015, 52.015)
    index = ZoneIndex([Zone.from_geometry(zone_id="h", geometry=outer.difference(hole))])
    assert index.zones_at(lat_deg=52.01, lng_deg=13.01) == []
    assert index.zones_at(lat_deg=52.005, lng_deg=13.01) == ["h"]
    assert index.zones_at(lat_deg=52.002, lng_deg=13.01) == ["h"]


def test_overlapping_zones_are_all_reported_sorted():
    a = Zone.circle(zone_id="b-big", lat_deg=LAT0, lng_deg=LNG0, radius_m=2000.0)
    b = Zone.circle(zone_id="a-small", lat_deg=LAT0, lng_deg=LNG0, radius_m=30.0)
    index = ZoneIndex([a, b])
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0) == ["a-small", "b-big"]


def test_add_remove_and_rebuild_change_answers():
    index = ZoneIndex()
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0) == []
    index.add(Zone.circle(zone_id="c", lat_deg=LAT0, lng_deg=LNG0, radius_m=50.0))
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0) == ["c"]
    index.add(Zone.circle(zone_id="d", lat_deg=LAT0, lng_deg=LNG0, radius_m=80.0))
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0) == ["c", "d"]
    index.remove("c")
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0) == ["d"]
    index.rebuild([Zone.circle(zone_id="e", lat_deg=0.0, lng_deg=0.0, radius_m=50.0)])
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0) == []
    assert index.zones_at(lat_deg=0.0, lng_deg=0.0) == ["e"]


def test_points_near_an_icosahedron_face_edge_are_still_exact():
    # Berlin-sized zones sit far from face edges; put one on a face edge to exercise the
    # fallback to h3-py's own index.
    from geofence.h3grid import face_edge_guard_sin, face_table, keys_for_points

    rng = np.random.default_rng(5)
    lat = rng.uniform(-60, 60, 200_000)
    lng = rng.uniform(-180, 180, 200_000)
    _, near = keys_for_points(lat, lng, 9, face_edge_guard_sin(res=9), face_table(res=9))
    k = int(np.flatnonzero(near)[0])
    zone = Zone.circle(zone_id="edge", lat_deg=float(lat[k]), lng_deg=float(lng[k]), radius_m=500.0)
    index = ZoneIndex([zone])
    plat = lat[k] + rng.uniform(-0.01, 0.01, 20_000)
    plng = lng[k] + rng.uniform(-0.01, 0.01, 20_000)
    assert _pairs_ours(index, plat, plng) == _pairs_shapely([zone], plat, plng)


def test_geojson_constructor_and_errors():
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "z1"},
         "geometry": {"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.0]]]}},
    ]}
    index = ZoneIndex.from_geojson(fc)
    assert index.zones_at(lat_deg=52.01, lng_deg=13.05) == ["z1"]
    with pytest.raises(ZoneError, match="no 'id'"):
        ZoneIndex.from_geojson({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": fc["features"][0]["geometry"]}]})
    with pytest.raises(ZoneError, match="Polygon or MultiPolygon"):
        Zone.from_geojson({"type": "Feature", "properties": {"id": "p"},
                           "geometry": {"type": "Point", "coordinates": [13.0, 52.0]}})


def test_signed_distance_is_negative_inside_and_metric():
    zone = Zone.circle(zone_id="c", lat_deg=LAT0, lng_deg=LNG0, radius_m=100.0, segments=256)
    index = ZoneIndex([zone])
    d_centre = index.signed_distance_m(zone_id="c", lat_deg=LAT0, lng_deg=LNG0)[0]
    assert d_centre == pytest.approx(-100.0, abs=0.2)
    east_200m = LNG0 + 200.0 / (M_PER_DEG * math.cos(math.radians(LAT0)))
    d_out = index.signed_distance_m(zone_id="c", lat_deg=LAT0, lng_deg=east_200m)[0]
    assert d_out == pytest.approx(100.0, abs=0.5)


def test_orientation_predicate_is_exact_for_nearly_collinear_points():
    from fractions import Fraction

    rng = np.random.default_rng(11)
    for _ in range(3000):
        ax, ay, bx, by = LNG0 + rng.uniform(-0.1, 0.1), LAT0 + rng.uniform(-0.1, 0.1), \
            LNG0 + rng.uniform(-0.1, 0.1), LAT0 + rng.uniform(-0.1, 0.1)
        t = rng.uniform(0, 1)
        cx = ax + (bx - ax) * t  # on the segment up to rounding: the hard case
        cy = ay + (by - ay) * t
        exact = (Fraction(bx) - Fraction(ax)) * (Fraction(cy) - Fraction(by)) - \
            (Fraction(by) - Fraction(ay)) * (Fraction(cx) - Fraction(bx))
        want = (exact > 0) - (exact < 0)
        assert orientation_index(ax, ay, bx, by, cx, cy) == want
    assert orientation_index(13.0, 52.0, 13.5, 52.25, 13.25, 52.125) == 0
    assert orientation_index(13.0, 52.0, 13.5, 52.25, 13.25, np.nextafter(52.125, 60.0)) == 1


def test_invalid_geometry_is_refused_with_the_reason():
    bowtie = shapely.Polygon([(13.0, 52.0), (13.1, 52.1), (13.1, 52.0), (13.0, 52.1)])
    with pytest.raises(ZoneError, match="Self-intersection"):
        ZoneIndex([Zone.from_geometry(zone_id="bowtie", geometry=bowtie)])


def test_nan_points_are_in_no_zone():
    index = ZoneIndex([Zone.circle(zone_id="c", lat_deg=LAT0, lng_deg=LNG0, radius_m=50.0)])
    m = index.classify(lat_deg=np.array([np.nan, LAT0]), lng_deg=np.array([LNG0, np.nan]))
    assert m.counts().tolist() == [0, 0]


def test_matches_joined_agrees_with_zones_of():
    zones = [Zone.circle(zone_id=f"z{k}", lat_deg=LAT0, lng_deg=LNG0 + 0.001 * k, radius_m=100.0) for k in range(3)]
    index = ZoneIndex(zones)
    lat = np.full(6, LAT0)
    lng = LNG0 + np.array([-0.01, 0.0, 0.0005, 0.001, 0.002, 0.05])
    m = index.classify(lat_deg=lat, lng_deg=lng)
    assert m.joined(";") == [";".join(m.zones_of(p)) for p in range(len(m))]
    assert m.joined(";")[0] == "" and m.joined(";")[2] == "z0;z1"
    empty = index.classify(lat_deg=np.array([0.0]), lng_deg=np.array([0.0]))
    assert empty.joined(";") == [""]


def test_zones_at_filters_by_kind_and_cover_cells_are_real_h3_cells():
    import h3.api.basic_int as h3

    index = ZoneIndex([
        Zone.circle(zone_id="area", lat_deg=LAT0, lng_deg=LNG0, radius_m=2000.0, kind="delivery"),
        Zone.circle(zone_id="door", lat_deg=LAT0, lng_deg=LNG0, radius_m=20.0),
    ])
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0) == ["area", "door"]
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0, kind="delivery") == ["area"]
    cells, interior = index.cover_cells("area")
    assert all(h3.is_valid_cell(int(c)) and h3.get_resolution(int(c)) == 9 for c in cells)
    assert interior.any() and (~interior).any()
    assert h3.latlng_to_cell(LAT0, LNG0, 9) in set(cells[interior].tolist())


def test_geojson_round_trip_keeps_ids_kinds_and_geometry():
    import json

    from geofence import zones_from_geojson, zones_to_geojson

    zones = [Zone.circle(zone_id="door", lat_deg=LAT0, lng_deg=LNG0, radius_m=20.0),
             Zone.from_geometry(zone_id="area", geometry=shapely.box(13.0, 52.0, 13.1, 52.1), kind="delivery")]
    back = zones_from_geojson(json.loads(json.dumps(zones_to_geojson(zones))))
    assert [(z.zone_id, z.kind) for z in back] == [("door", "dropoff"), ("area", "delivery")]
    assert all(a.geometry.equals(b.geometry) for a, b in zip(zones, back))


@pytest.mark.parametrize("lat0, lng0", [(-33.9, 151.2), (40.7, -74.0), (69.6, 18.9), (-0.1, -78.5)])
def test_exact_in_every_hemisphere_and_at_high_latitude(lat0, lng0):
    rng = np.random.default_rng(int(abs(lat0 * 10)))
    zones = [Zone.circle(zone_id=f"c{k}", lat_deg=lat0 + rng.uniform(-0.05, 0.05),
                         lng_deg=lng0 + rng.uniform(-0.05, 0.05), radius_m=float(rng.choice([20, 300, 3000])))
             for k in range(15)]
    lat = [rng.uniform(lat0 - 0.08, lat0 + 0.08, 20_000)]
    lng = [rng.uniform(lng0 - 0.08, lng0 + 0.08, 20_000)]
    for z in zones:
        xy = shapely.get_coordinates(z.geometry.exterior)
        on = xy[:-1] + (xy[1:] - xy[:-1]) * rng.uniform(0, 1, (len(xy) - 1, 1))
        lat += [on[:, 1], xy[:, 1]]
        lng += [on[:, 0], xy[:, 0]]
    lat, lng = np.concatenate(lat), np.concatenate(lng)
    assert _pairs_ours(ZoneIndex(zones), lat, lng) == _pairs_shapely(zones, lat, lng)


def test_rebuild_reuses_unchanged_covers_and_recomputes_changed_ones():
    a = Zone.circle(zone_id="a", lat_deg=LAT0, lng_deg=LNG0, radius_m=100.0)
    b = Zone.circle(zone_id="b", lat_deg=LAT0, lng_deg=LNG0 + 0.01, radius_m=100.0)
    index = ZoneIndex([a, b])
    cover_a = index._prepared["a"].cover
    moved_b = Zone.circle(zone_id="b", lat_deg=LAT0 + 0.01, lng_deg=LNG0, radius_m=100.0)
    index.rebuild([Zone.from_geometry(zone_id="a", geometry=a.geometry, kind="depot"), moved_b])
    assert index._prepared["a"].cover is cover_a and index.zone("a").kind == "depot"
    assert index.zones_at(lat_deg=LAT0 + 0.01, lng_deg=LNG0) == ["b"]
    assert index.zones_at(lat_deg=LAT0, lng_deg=LNG0 + 0.01) == []
