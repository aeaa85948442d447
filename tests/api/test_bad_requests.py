"""Bad request bodies get a 422 with the field and the reason; nothing is written."""

from __future__ import annotations

import uuid

import pytest

from core.rbac import Role


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"name": "X", "lat": 91, "lng": 7.4}, "lat", "less than or equal to 90"),
        ({"name": "X", "lat": 43.7, "lng": -181}, "lng", "greater than or equal to -180"),
        ({"name": "X", "lat": "north", "lng": 7.4}, "lat", "valid number"),
        ({"name": "X", "lat": 43.7}, "lng", "Field required"),
        ({"name": "X", "lat": 43.7, "lng": 7.4, "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
async def test_bad_depot_body_names_the_field_and_reason(client, make_account, body, field, reason):
    admin = await make_account(Role.ADMIN)
    r = await client.post("/v1/admin/depots", headers=admin.headers, json=body)
    assert r.status_code == 422
    assert r.json()["detail"].startswith(f"{field}:") and reason in r.json()["detail"]


async def test_nan_coordinates_are_refused(client, make_account):
    admin = await make_account(Role.ADMIN)
    r = await client.post("/v1/admin/depots", headers={**admin.headers, "content-type": "application/json"},
                          content=b'{"name": "X", "lat": NaN, "lng": 7.4}')
    assert r.status_code == 422


async def test_malformed_json_is_refused_with_a_reason(client, make_account):
    admin = await make_account(Role.ADMIN)
    r = await client.post("/v1/admin/vehicles", headers={**admin.headers, "content-type": "application/json"}, content=b'{"plate": ')
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


@pytest.mark.parametrize(
    ("geometry", "reason"),
    [
        ({"type": "Point", "coordinates": [7.4, 43.7]}, "must be a GeoJSON Polygon or MultiPolygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "not a valid polygon: Self-intersection"),
        ({"type": "Polygon", "coordinates": [[[200, 0], [201, 0], [201, 1], [200, 0]]]}, "lng/lat in WGS84"),
        ({"type": "Polygon", "coordinates": "nope"}, "not valid GeoJSON"),
    ],
)
async def test_bad_zone_geometry_is_refused_with_a_precise_reason(client, make_account, pool, geometry, reason):
    admin = await make_account(Role.ADMIN)
    code = f"z{uuid.uuid4().hex[:8]}"
    r = await client.post("/v1/admin/zones", headers=admin.headers, json={"code": code, "name": "Zone", "geometry": geometry})
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]
    assert await pool.fetchval("SELECT count(*) FROM service_zones WHERE code=$1", code) == 0


async def test_valid_zone_is_stored_with_its_area(client, make_account):
    admin = await make_account(Role.ADMIN)
    square = {"type": "Polygon", "coordinates": [[[7.41, 43.72], [7.43, 43.72], [7.43, 43.74], [7.41, 43.74], [7.41, 43.72]]]}
    r = await client.post("/v1/admin/zones", headers=admin.headers,
                          json={"code": f"z{uuid.uuid4().hex[:8]}", "name": "Monaco", "geometry": square, "base_fee": "3.90"})
    assert r.status_code == 201, r.text
    assert 3.5 < r.json()["area_km2"] < 3.6  # 0.02° × 0.02° at 43.7° N


async def test_unknown_route_and_wrong_method_are_clear(client):
    assert (await client.get("/v1/nowhere")).status_code == 404
    assert (await client.delete("/v1/auth/login")).status_code == 405
