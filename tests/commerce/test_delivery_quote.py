"""Delivery quote: zone check, road distance from the routing engine (or the labelled estimate), fee, open windows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from commerce.checkout import delivery
from core.models import Depot, ServiceZone

# Two points on the bundled Helsinki graph's streets (~1 km apart by road).
DEPOT_AT = (60.1641692, 24.9479733)
ADDRESS_AT = (60.1698263, 24.9532751)


@pytest.fixture
def road_graph():
    from routing import graph

    delivery.set_road_graph(graph.load(progress=False))
    yield
    delivery.set_road_graph(None)


async def test_the_quote_uses_the_road_graph_distance_from_the_nearest_depot(app, settings, road_graph):
    tag = uuid.uuid4().hex[:8]
    async with app.state.sessions() as db, db.begin():
        depot = Depot(name=f"central-{tag}", location=f"SRID=4326;POINT({DEPOT_AT[1]} {DEPOT_AT[0]})")
        lat, lng = ADDRESS_AT
        ring = f"{lng - .01} {lat - .01}, {lng + .01} {lat - .01}, {lng + .01} {lat + .01}, {lng - .01} {lat + .01}, {lng - .01} {lat - .01}"
        db.add_all([depot, ServiceZone(code=f"hki-{tag}", name="Kamppi", area=f"SRID=4326;MULTIPOLYGON((({ring})))",
                                       base_fee="0.00", currency="EUR")])
        await db.flush()
        nearest = await delivery.nearest_depot(db=db, lat=lat, lng=lng)
        q = await delivery.quote(db=db, settings=settings, lat=lat, lng=lng, currency="EUR", now=datetime.now(UTC))
    assert q.depot.id == nearest.id  # (other tests' Helsinki depots may be nearer than ours)
    assert q.fee == (Decimal(settings.commerce_fee_per_km) * Decimal(q.distance_m) / 1000).quantize(Decimal("0.01"))
    ours = delivery.Depot(depot.id, depot.name, *DEPOT_AT)
    metres, source = await delivery.road_distance_m(settings, ours, lat, lng)
    assert source == "road"
    assert metres >= delivery.haversine_m(*DEPOT_AT, lat, lng)  # a road is never shorter than the straight line


async def test_without_a_graph_the_distance_is_a_labelled_estimate(settings):
    depot = delivery.Depot(1, "d", 60.0, 25.0)
    metres, source = await delivery.road_distance_m(settings, depot, 60.01, 25.0)
    assert source == "haversine_estimate"
    assert metres == round(delivery.haversine_m(60.0, 25.0, 60.01, 25.0) * settings.commerce_detour_factor)


def test_windows_close_before_they_start_and_are_in_utc(settings):
    now = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)  # 11:30 in Helsinki; cut-off 60 min → windows from 12:30 local
    windows = delivery.open_windows(settings, now)
    # 12-14 local starts before the cut-off: the first open window is 14-16 local = 12:00-14:00 UTC.
    assert (windows[0].start, windows[0].end) == (datetime(2026, 11, 25, 12, tzinfo=UTC), datetime(2026, 11, 25, 14, tzinfo=UTC))
    assert len(windows) == 3 + 5 + 5  # the rest of today, then two full days


async def test_vat_rates_come_by_country_region_and_class(app):
    from commerce.checkout.service import tax_rate
    from core.errors import ValidationFailed

    async with app.state.sessions() as db:
        assert await tax_rate(db=db, country="FI", region="", tax_class="standard") == Decimal("0.2550")
        assert await tax_rate(db=db, country="fi", region="Uusimaa", tax_class="food") == Decimal("0.1400")  # country default
        assert await tax_rate(db=db, country="FI", region="Ahvenanmaa", tax_class="standard") == Decimal("0.2550")
        assert await tax_rate(db=db, country="DE", region="", tax_class="food") == Decimal("0.0700")
        with pytest.raises(ValidationFailed, match="no tax rate"):
            await tax_rate(db=db, country="US", region="", tax_class="standard")
