"""Where and when we can deliver: serviceability, nearest depot, road distance, delivery fee, open windows.

Serviceability asks PostGIS directly (`ST_Covers` on `service_zones.area`, GiST-indexed)
rather than `geofence`, whose zone engine is being built in parallel; when several
zones cover a point the cheapest wins. ST_Covers (not ST_Contains) so an address
exactly on a zone's border is served.

Road distance: with a road graph (settings.commerce_graph: an OSM file, a graph
directory or "default" for the bundled city, loaded once per process on first use; or
one registered with `set_road_graph`), `routing.matrix.travel_matrix` gives the
fastest-path distance from the depot. Without one — or when the depot or the address
cannot be snapped to it, e.g. outside the graph's area — it is an ESTIMATE: great-circle
distance × a detour factor (settings.commerce_detour_factor, 1.35 by default, a typical
ratio of road to straight distance in European cities). The quote and the order record
which one was used (`distance_source` = "road" | "haversine_estimate").
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from commerce import money, sql
from core.errors import SerenaError, ValidationFailed
from core.settings import Settings

EARTH_RADIUS_M = 6_371_008.8

log = logging.getLogger(__name__)

_road_graph: Any = None  # a routing.graph.Graph registered by the process
_loaded: dict[str, Any] = {}  # settings.commerce_graph → Graph (None: failed to load, not retried)


class OutsideDeliveryArea(SerenaError):
    """The address is in no active delivery zone: said before any payment is attempted."""

    status_code = 422
    code = "outside_delivery_area"


class NoDepot(OutsideDeliveryArea):
    """The address is in a zone, but no depot can serve it (with `stocked`: none holds all of those items)."""


def set_road_graph(graph: Any) -> None:
    """Use this compiled road graph for quote distances (None: back to the haversine estimate)."""
    global _road_graph
    _road_graph = graph


@dataclass(frozen=True)
class Zone:
    id: int
    code: str
    name: str
    base_fee: Decimal
    currency: str


@dataclass(frozen=True)
class Depot:
    id: int
    name: str
    lat: float
    lng: float


@dataclass(frozen=True)
class Window:
    start: datetime  # UTC
    end: datetime  # UTC

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class Quote:
    zone: Zone
    depot: Depot
    distance_m: int
    distance_source: str  # road | haversine_estimate
    fee: Decimal  # in `currency`, before any free-delivery benefit
    currency: str
    windows: list[Window]


def check_point(lat: float, lng: float) -> None:
    if not (-90 <= lat <= 90 and -180 <= lng <= 180) or math.isnan(lat) or math.isnan(lng):
        raise ValidationFailed("lat must be in [-90, 90] and lng in [-180, 180]")


async def zone_for(*, db: AsyncSession, lat: float, lng: float) -> Zone:
    """The delivery zone covering (lat, lng), or OutsideDeliveryArea."""
    check_point(lat, lng)
    row = (await db.execute(text("""
        SELECT id, code, name, base_fee, currency FROM service_zones
        WHERE active AND kind = 'delivery' AND ST_Covers(area, ST_SetSRID(ST_MakePoint(:lng, :lat), 4326))
        ORDER BY base_fee::numeric, id LIMIT 1
    """), {"lat": lat, "lng": lng})).first()
    if row is None:
        raise OutsideDeliveryArea(f"we do not deliver to {lat:.5f}, {lng:.5f} yet: the address is outside every delivery zone")
    return Zone(row.id, row.code, row.name, Decimal(row.base_fee), row.currency)


def _stocked_condition(stocked: list[tuple[int, int]] | None, params: dict[str, Any]) -> str:
    """The WHERE clause keeping depots `d` that hold every (variant_id, qty) of `stocked` (adds its params)."""
    if not stocked:
        return ""
    params["vids"] = [v for v, _ in stocked]
    params["qtys"] = [q for _, q in stocked]
    return """WHERE NOT EXISTS (
            SELECT 1 FROM unnest(CAST(:vids AS int[]), CAST(:qtys AS int[])) AS l(v, q)
            WHERE NOT EXISTS (SELECT 1 FROM stock s WHERE s.variant_id = l.v AND s.depot_id = d.id AND s.quantity >= l.q))"""


async def nearest_depot(*, db: AsyncSession, lat: float, lng: float, stocked: list[tuple[int, int]] | None = None) -> Depot | None:
    """The depot closest to the point; with `stocked` [(variant_id, qty)], only depots holding all of it."""
    params: dict[str, Any] = {"lat": lat, "lng": lng}
    cond = _stocked_condition(stocked, params)
    row = (await db.execute(text(f"""
        SELECT d.id, d.name, ST_Y(d.location) AS lat, ST_X(d.location) AS lng FROM depots d {cond}
        ORDER BY d.location <-> ST_SetSRID(ST_MakePoint(:lng, :lat), 4326), d.id LIMIT 1
    """), params)).first()
    return Depot(row.id, row.name, row.lat, row.lng) if row else None


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


async def _graph(settings: Settings) -> Any:
    if _road_graph is not None:
        return _road_graph
    source = settings.commerce_graph
    if not source:
        return None
    if source not in _loaded:
        def load() -> Any:
            from routing import graph

            return graph.load(None if source == "default" else source, progress=False)

        try:
            _loaded[source] = await asyncio.to_thread(load)
        except Exception as exc:  # noqa: BLE001 - a missing graph degrades quotes to the estimate, never fails them
            log.warning("road graph %r could not be loaded (%s); quotes use the haversine estimate", source, exc)
            _loaded[source] = None
    return _loaded[source]


async def road_distance_m(settings: Settings, depot: Depot, lat: float, lng: float) -> tuple[int, str]:
    """(metres, source): the road graph's fastest-path distance if possible, else the labelled estimate."""
    g = await _graph(settings)
    if g is not None:
        try:
            from routing import matrix

            m = await asyncio.to_thread(matrix.travel_matrix, g, [[depot.lat, depot.lng]], [[lat, lng]])
            d = float(m.distance_m[0, 0])
            if math.isfinite(d):
                return int(round(d)), "road"
        except Exception:  # noqa: BLE001 - e.g. a point too far from any road of the graph
            pass
    return int(round(haversine_m(depot.lat, depot.lng, lat, lng) * settings.commerce_detour_factor)), "haversine_estimate"


def convert_fee(settings: Settings, amount: Decimal, from_currency: str, to_currency: str) -> Decimal:
    """Zone fees are priced in the zone's currency; a basket in another currency pays the converted, rounded fee."""
    if from_currency == to_currency:
        return money.round_money(amount, to_currency)
    rates = {"EUR": Decimal(1)} | {k: Decimal(v) for k, v in (kv.split("=") for kv in settings.commerce_fx_rates.split(",") if "=" in kv)}
    if from_currency not in rates or to_currency not in rates:
        raise ValidationFailed(f"no exchange rate between {from_currency} and {to_currency}")
    return money.round_money(amount / rates[from_currency] * rates[to_currency], to_currency)


def open_windows(settings: Settings, now: datetime) -> list[Window]:
    """The delivery windows that still accept orders: start later than now + cut-off, over the next N days."""
    tz = ZoneInfo(settings.commerce_timezone)
    local_today = now.astimezone(tz).date()
    cutoff = now + timedelta(minutes=settings.commerce_window_cutoff_min)
    slots = []
    for spec in settings.commerce_windows.split(","):
        a, b = spec.strip().split("-")
        slots.append((int(a), int(b)))
    out = []
    for day in range(settings.commerce_window_days):
        d: date = local_today + timedelta(days=day)
        for a, b in slots:
            start = datetime.combine(d, time(a), tz).astimezone(UTC)
            end = datetime.combine(d, time(b % 24), tz).astimezone(UTC) + (timedelta(days=1) if b >= 24 else timedelta(0))
            if start >= cutoff:
                out.append(Window(start, end))
    return out


# The zone covering the point and the nearest depot (holding every (variant, qty) of `stocked`
# when given) in ONE statement: a quote and a checkout each made two round trips for these.
_ZONE_AND_DEPOT = """
    SELECT z.id AS zone_id, z.code AS zone_code, z.name AS zone_name, z.base_fee, z.currency,
           d.id AS depot_id, d.name AS depot_name, d.lat AS depot_lat, d.lng AS depot_lng
    FROM (SELECT ST_SetSRID(ST_MakePoint(CAST(:lng AS float8), CAST(:lat AS float8)), 4326) AS pt) p
    LEFT JOIN LATERAL (
        SELECT id, code, name, base_fee, currency FROM service_zones
        WHERE active AND kind = 'delivery' AND ST_Covers(area, p.pt)
        ORDER BY base_fee::numeric, id LIMIT 1) z ON true
    LEFT JOIN LATERAL (
        SELECT d.id, d.name, ST_Y(d.location) AS lat, ST_X(d.location) AS lng FROM depots d {cond}
        ORDER BY d.location <-> p.pt, d.id LIMIT 1) d ON true
"""


async def zone_and_depot(*, db: Any, lat: float, lng: float,
                         stocked: list[tuple[int, int]] | None = None) -> tuple[Zone, Depot]:
    """The delivery zone covering (lat, lng) and the depot that serves it; OutsideDeliveryArea, or NoDepot.

    `db`: an AsyncSession, or the app's asyncpg pool (commerce.sql; one read, no transaction needed).
    """
    check_point(lat, lng)
    params: dict[str, Any] = {"lat": lat, "lng": lng}
    cond = _stocked_condition(stocked, params)
    row = await sql.fetchrow(db, _ZONE_AND_DEPOT.format(cond=cond), params)
    assert row is not None  # one row always (LEFT JOINs on a one-row FROM)
    if row["zone_id"] is None:
        raise OutsideDeliveryArea(f"we do not deliver to {lat:.5f}, {lng:.5f} yet: the address is outside every delivery zone")
    if row["depot_id"] is None:
        raise NoDepot("no depot can serve this address" + (" with these items in stock" if stocked else ""))
    return (Zone(row["zone_id"], row["zone_code"], row["zone_name"], Decimal(row["base_fee"]), row["currency"]),
            Depot(row["depot_id"], row["depot_name"], row["depot_lat"], row["depot_lng"]))


async def quote(*, db: Any, settings: Settings, lat: float, lng: float, currency: str, now: datetime,
                stocked: list[tuple[int, int]] | None = None) -> Quote:
    """Serviceability, pickup depot, distance, fee (zone base + per km) and open windows for an address.

    OutsideDeliveryArea when no zone covers the address (checked first, before stock); NoDepot (a
    subclass) when no depot can serve it — with `stocked`, none that holds all of those items.
    """
    cur = money.check_currency(currency)
    zone, depot = await zone_and_depot(db=db, lat=lat, lng=lng, stocked=stocked)
    distance_m, source = await road_distance_m(settings, depot, lat, lng)
    fee_zone = zone.base_fee + Decimal(settings.commerce_fee_per_km) * Decimal(distance_m) / Decimal(1000)
    fee = convert_fee(settings, fee_zone, zone.currency, cur)
    return Quote(zone=zone, depot=depot, distance_m=distance_m, distance_source=source, fee=fee, currency=cur,
                 windows=open_windows(settings, now))
