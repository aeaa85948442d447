"""Dispatch fixtures: a depot, drivers with accounts and shifts, jobs, all through the real API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest_asyncio

from core.rbac import Role

# Helsinki centre: the demo city. Drop-offs are spread a few km around it.
DEPOT = (60.1699, 24.9384)


@dataclass
class DriverAccount:
    driver_id: int
    headers: dict[str, str]
    email: str


@pytest_asyncio.fixture(loop_scope="session")
async def dispatcher(make_account):
    return await make_account(Role.DISPATCHER)


@pytest_asyncio.fixture(loop_scope="session")
async def depot(client, dispatcher):
    r = await client.post("/v1/admin/depots", headers=dispatcher.headers,
                          json={"name": f"Depot {uuid.uuid4().hex[:6]}", "lat": DEPOT[0], "lng": DEPOT[1]})
    assert r.status_code == 201, r.text
    return r.json()


@pytest_asyncio.fixture(loop_scope="session")
async def make_driver(client, dispatcher):
    async def make(*, on_duty: bool = True, at: tuple[float, float] = DEPOT) -> DriverAccount:
        email = f"driver-{uuid.uuid4().hex[:8]}@example.test"
        r = await client.post("/v1/admin/drivers", headers=dispatcher.headers,
                              json={"email": email, "password": "driver password 1", "display_name": "Test Driver"})
        assert r.status_code == 201, r.text
        driver_id = r.json()["id"]
        r = await client.post("/v1/auth/login", json={"email": email, "password": "driver password 1"})
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        if on_duty:
            r = await client.post("/v1/driver/shift/start", headers=headers, json={"lat": at[0], "lng": at[1]})
            assert r.status_code == 200, r.text
        return DriverAccount(driver_id, headers, email)

    return make


def delivery_body(lat: float, lng: float, *, hours: float = 4, **extra) -> dict:
    now = datetime.now(UTC)
    return {"reference": f"ext-{uuid.uuid4().hex[:6]}", "dropoff": {"lat": lat, "lng": lng, "address": "Mannerheimintie 1, Helsinki"},
            "recipient_name": "Aino Customer", "window_start": now.isoformat(), "window_end": (now + timedelta(hours=hours)).isoformat(),
            **extra}
