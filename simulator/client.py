"""The simulator's side of the public API: sessions that refresh themselves, and bootstrapping a fleet.

Everything here is an HTTP call a real admin, driver or customer app could make. An admin
signs in with the TOTP code computed from the secret `serena users create-admin` printed
(or was given); drivers sign in with the password the admin set; each driver's broker
password comes back once, in the create response.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import pyotp

from simulator.city import City, offset


class ApiError(RuntimeError):
    pass


@dataclass
class Session:
    """A signed-in user: refreshes its access token on 401 (once) and retries the request."""

    http: httpx.AsyncClient
    email: str
    password: str
    totp_secret: str | None = None
    access: str = ""
    refresh: str = ""

    async def login(self) -> None:
        body = {"email": self.email, "password": self.password}
        if self.totp_secret:
            body["totp_code"] = pyotp.TOTP(self.totp_secret).now()
        for attempt in range(6):
            r = await self.http.post("/v1/auth/login", json=body)
            if r.status_code == 429:  # sign-in throttling: back off like a person would
                await asyncio.sleep(1.0 + attempt)
                continue
            if r.status_code != 200:
                raise ApiError(f"sign-in of {self.email} failed: {r.status_code} {r.text[:200]}")
            tok = r.json()
            self.access, self.refresh = tok["access_token"], tok["refresh_token"]
            return
        raise ApiError(f"sign-in of {self.email} throttled")

    async def resume(self) -> None:
        """Sign in from a saved refresh token if there is one (a phone reopening the app), else with the password."""
        if self.refresh:
            await self._refresh()
        else:
            await self.login()

    async def _refresh(self) -> None:
        r = await self.http.post("/v1/auth/refresh", json={"refresh_token": self.refresh})
        if r.status_code != 200:
            await self.login()
            return
        tok = r.json()
        self.access, self.refresh = tok["access_token"], tok["refresh_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    async def request(self, method: str, url: str, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        r = await self.http.request(method, url, headers={**headers, **self.headers}, **kw)
        if r.status_code == 401:
            await self._refresh()
            r = await self.http.request(method, url, headers={**headers, **self.headers}, **kw)
        return r

    async def get(self, url: str, **kw) -> httpx.Response:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw) -> httpx.Response:
        return await self.request("POST", url, **kw)


def _check(r: httpx.Response, what: str, ok=(200, 201)) -> dict:
    if r.status_code not in ok:
        raise ApiError(f"{what}: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


@dataclass
class DriverAccount:
    index: int
    driver_id: int
    email: str
    password: str
    mqtt_username: str
    mqtt_password: str
    vehicle_id: int | None
    refresh_token: str = field(default="", repr=False)  # the phone's saved session (accounts file only)


def load_accounts(path: Path, *, base_url: str, depot_id: int, n: int) -> list[DriverAccount] | None:
    """The first `n` saved driver accounts of this platform and depot, or None when the file has fewer.

    A phone stays signed in between shifts: a run that reuses accounts starts each driver
    from its saved refresh token (one cheap token rotation) instead of a password sign-in
    (one argon2 verification, ~0.15 s of the API's CPU each), and creates nobody.
    """
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if doc.get("base_url") != base_url or doc.get("depot_id") != depot_id or len(doc.get("accounts", ())) < n:
        return None
    return [DriverAccount(**a) for a in doc["accounts"][:n]]


def save_accounts(path: Path, accounts: list[DriverAccount], *, base_url: str, depot_id: int) -> None:
    """Write the accounts (with passwords and sessions: owner-only file) for a later run to reuse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"base_url": base_url, "depot_id": depot_id, "accounts": [asdict(a) for a in accounts]}, f)
    os.replace(tmp, path)


async def ensure_depot(admin: Session, city: City, tag: str) -> dict:
    """The depot nearest the city centre (within 3 km), or a new one there."""
    depots = _check(await admin.get("/v1/admin/depots"), "list depots")
    clat, clng = city.depot_site()

    def dist(d):
        return math.hypot((d["lat"] - clat) * 111_320, (d["lng"] - clng) * 111_320 * math.cos(math.radians(clat)))

    near = sorted((d for d in depots if dist(d) < 3_000), key=dist)
    if near:
        return near[0]
    return _check(await admin.post("/v1/admin/depots", json={"name": f"Simulator depot {tag}", "lat": clat, "lng": clng,
                                                              "address": "simulated depot"}), "create depot")


async def ensure_zone(admin: Session, city: City, tag: str) -> None:
    """A delivery zone over the city (for checkout serviceability and geofencing), unless one exists."""
    zones = _check(await admin.get("/v1/admin/zones"), "list zones")
    if any(z.get("kind") == "delivery" for z in zones):
        return
    s, w, n, e = city.bbox
    s, w = offset(s, w, -300, -300)
    n, e = offset(n, e, 300, 300)
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    _check(await admin.post("/v1/admin/zones", json={"code": f"sim-{tag}", "name": f"Simulated city {tag}", "kind": "delivery",
                                                     "geometry": {"type": "Polygon", "coordinates": [ring]},
                                                     "base_fee": "4.90"}), "create zone")


async def create_drivers(admin: Session, *, n: int, tag: str, depot_id: int, concurrency: int = 4,
                         on_progress=None) -> list[DriverAccount]:
    """n vehicles and n driver accounts (each with its broker credentials, shown once)."""
    sem = asyncio.Semaphore(concurrency)
    out: list[DriverAccount | None] = [None] * n

    async def one(i: int) -> None:
        async with sem:
            v = _check(await admin.post("/v1/admin/vehicles", json={"plate": f"SIM-{tag}-{i:04d}", "kind": "van",
                                                                    "depot_id": depot_id}), "create vehicle")
            email, password = f"sim-{tag}-{i:04d}@drivers.serena.local", f"sim driver {tag} {i}"
            d = _check(await admin.post("/v1/admin/drivers", json={"email": email, "password": password,
                                                                   "display_name": f"Sim driver {i}"}), "create driver")
            out[i] = DriverAccount(i, d["id"], email, password, d["mqtt_username"], d["mqtt_password"], v["id"])
            if on_progress:
                on_progress()

    await asyncio.gather(*(one(i) for i in range(n)))
    return [a for a in out if a is not None]
