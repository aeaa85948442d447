"""Commerce fixtures: a private localstripe on a free loopback port, the real Stripe SDK pointed at it, and a small shop.

Each `shop` is a depot, a delivery zone around it and a product with two variants, placed
at a random spot on the globe so tests sharing the worker database never see each other's
zones or stock (a zone lookup picks the cheapest zone covering the point; depots are
chosen by distance).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
import stripe
from sqlalchemy import text

from commerce.catalog import service as catalog
from commerce.payments.provider import StripeProvider
from core.models import Depot, ServiceZone

# localstripe pickles its whole store to /tmp/localstripe.pickle on every write; the test
# instance turns that off (faster, and it never clobbers a developer's own localstripe).
_LOCALSTRIPE = (
    "import sys, localstripe.resources as r; r.Store.dump_to_disk = lambda self: None; "
    "from localstripe.server import start; sys.argv = ['localstripe', '--port', sys.argv[1], '--from-scratch']; start()"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def localstripe_url():
    """A localstripe process of this worker's own; its URL."""
    for _ in range(3):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-c", _LOCALSTRIPE, str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(url + "/v1/customers", headers={"Authorization": "Bearer sk_test_x"}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        if proc.poll() is None:
            break
    else:
        pytest.fail("localstripe did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def stripe_settings(settings, localstripe_url):
    return settings.model_copy(update={"stripe_api_base": localstripe_url})


@pytest.fixture(scope="session")
def stripe_provider(stripe_settings) -> StripeProvider:
    return StripeProvider(stripe_settings)


@pytest_asyncio.fixture(loop_scope="session")
async def shop_app(app, stripe_provider):
    """The app with its payment provider pointed at this worker's localstripe."""
    app.state.commerce_provider = stripe_provider
    return app


def stripe_client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_dev_only", base_addresses={"api": url}, http_client=stripe.HTTPXClient())


async def card(url: str, number: str = "4242424242424242") -> str:
    """What Stripe.js does in the browser: turn a test card into a PaymentMethod id."""
    pm = await stripe_client(url).v1.payment_methods.create_async(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    return pm.id


def signed(secret: str, event: dict, *, ts: int | None = None) -> tuple[bytes, str]:
    """A webhook body and its Stripe-Signature header, as Stripe (and localstripe) compute them."""
    body = json.dumps(event).encode()
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={ts},v1={sig}"


def intent_event(pi: dict, type_: str, *, event_id: str | None = None) -> dict:
    return {"id": event_id or f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": type_,
            "created": int(time.time()), "api_version": "2020-08-27", "data": {"object": pi}}


@dataclass
class Shop:
    lat: float
    lng: float
    depot_id: int
    zone_id: int
    category_id: int
    root_category_id: int
    category_slug: str
    product_id: int
    slug: str
    word: str  # a word only this shop's product has, to search for
    variant_ids: list[int]
    skus: list[str]


async def make_shop(sessions, *, stock: int = 10, price: str = "24.90", fee: str = "3.90", tax_class: str = "standard",
                    skills: list[str] | None = None) -> Shop:
    """A depot with a square delivery zone around it and one product (two variants) in stock there."""
    rnd = random.Random()
    lat, lng = rnd.uniform(-50, 50), rnd.uniform(-170, 170)
    tag = uuid.uuid4().hex[:8]
    word = "zq" + "".join(rnd.choice("bcdfghjklmnpqrstvwxz") for _ in range(8))
    async with sessions() as db, db.begin():
        depot = Depot(name=f"depot-{tag}", location=f"SRID=4326;POINT({lng} {lat})", address="Testikatu 1")
        d = 0.05
        ring = f"{lng - d} {lat - d}, {lng + d} {lat - d}, {lng + d} {lat + d}, {lng - d} {lat + d}, {lng - d} {lat - d}"
        zone = ServiceZone(code=f"zone-{tag}", name=f"Zone {tag}", area=f"SRID=4326;MULTIPOLYGON((({ring})))",
                           base_fee=fee, currency="EUR")
        db.add_all([depot, zone])
        await db.flush()
        root = await catalog.create_category(db=db, name=f"Clothing {tag}", slug=f"clothing-{tag}")
        cat = await catalog.create_category(db=db, name=f"Jackets {tag}", slug=f"jackets-{tag}", parent_id=root.id)
        pt = await catalog.create_product_type(db=db, name=f"Apparel {tag}", attributes=[
            {"code": "size", "name": "Size", "type": "choice", "values": ["S", "M", "L"], "variant": True},
            {"code": "colour", "name": "Colour", "type": "choice", "values": ["red", "blue", "green"]},
            {"code": "material", "name": "Material", "type": "text"}])
        variants = [catalog.VariantIn(sku=f"SKU-{tag}-{s}", name=s, prices={"EUR": Decimal(price), "SEK": Decimal("279.00")},
                                      weight_kg=Decimal("0.8"), volume_l=Decimal("4"), attributes={"size": s},
                                      stock={depot.id: stock}) for s in ("M", "L")]
        product = await catalog.create_product(
            db=db, type_id=pt.id, category_id=cat.id, name=f"Rain jacket {word}", slug=f"rain-jacket-{tag}",
            description="A light waterproof jacket for Helsinki autumns.", brand="Nordwind",
            attributes={"colour": "red", "material": "recycled polyester"}, variants=variants, tax_class=tax_class,
            skills=skills or [])
        vids = list((await db.execute(text("SELECT id FROM product_variants WHERE product_id = :p ORDER BY id"),
                                      {"p": product.id})).scalars())
    return Shop(lat, lng, depot.id, zone.id, cat.id, root.id, cat.slug, product.id, product.slug, word, vids,
                [v.sku for v in variants])


@pytest_asyncio.fixture(loop_scope="session")
async def shop(app) -> Shop:
    return await make_shop(app.state.sessions)
