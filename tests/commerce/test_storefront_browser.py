"""The storefront in headless Chromium: search with facets, product page with JSON-LD, cart, checkout with a test card
through the real Stripe SDK against localstripe, the paid order's page. Screenshots land in screenshots/shop-*.png."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from commerce.payments.provider import StripeProvider
from core.db import make_engine, make_sessionmaker
from tests.commerce.conftest import make_shop
from tests.paths import REPO

CHROMIUM = os.environ.get("SERENA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = REPO / "screenshots"

pytestmark = pytest.mark.browser


def _in_thread(coro_fn):
    """Run an async function to completion on a loop of its own (the test itself is synchronous)."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(value=asyncio.run(coro_fn())))
    t.start()
    t.join()
    return out["value"]


@pytest.fixture(scope="module")
def shop_server(settings, stripe_settings):
    from serena.app import create_app

    app = create_app(settings)
    app.state.commerce_provider = StripeProvider(stripe_settings)

    async def seed():
        engine = make_engine(settings.database_url)
        try:
            return await make_shop(make_sessionmaker(engine), stock=5)
        finally:
            await engine.dispose()

    shop = _in_thread(seed)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", shop
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="UTC")
        context.set_default_timeout(15_000)
        p = context.new_page()
        errors: list[str] = []
        p.on("pageerror", lambda exc: errors.append(str(exc)))
        p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        p.errors = errors  # type: ignore[attr-defined]
        yield p
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"shop-{name}.png"), full_page=True)


def test_a_guest_finds_a_product_and_pays_by_card_in_the_browser(shop_server, page):
    base, shop = shop_server
    page.goto(f"{base}/shop/search?q={shop.word}")
    assert page.locator("[data-total]").get_attribute("data-total") == "1"
    assert page.locator('[data-facet="colour:red"]').is_visible()
    shot(page, "search")
    page.locator('[data-facet="size:M"]').click()
    assert "f=size%3AM" in page.url and page.locator("[data-total]").get_attribute("data-total") == "1"
    assert page.locator('[data-facet="size:M"]').get_attribute("class") == "facet on"

    page.get_by_role("link", name=re.compile(shop.word)).first.click()
    ld = json.loads(page.locator('script[type="application/ld+json"]').text_content())
    assert ld["@type"] == "Product" and ld["offers"][0]["price"] == "24.90" and ld["offers"][0]["priceCurrency"] == "EUR"
    assert ld["offers"][0]["availability"] == "https://schema.org/InStock"
    shot(page, "product")
    page.get_by_role("button", name="Add to cart").click()
    assert page.url.endswith("/shop/cart")
    assert page.locator("[data-goods-total]").text_content().strip() == "24.90 €"
    shot(page, "cart")

    page.get_by_role("link", name="Checkout").click()
    page.get_by_label("Name").fill("Aino Virtanen")
    page.get_by_label("E-mail").fill("aino@example.test")
    page.get_by_label("Phone").fill("+358401234567")
    page.get_by_label("Address").fill("Aleksanterinkatu 52, Helsinki")
    page.get_by_label("Latitude").fill(str(shop.lat + 1))  # far outside the zone first
    page.get_by_label("Longitude").fill(str(shop.lng))
    page.get_by_role("button", name="Check delivery").click()
    assert "outside every delivery zone" in page.locator("[data-quote-error]").text_content()
    page.get_by_label("Latitude").fill(str(shop.lat + 0.002))
    page.get_by_role("button", name="Check delivery").click()
    assert page.locator("input[name=window_start]").count() > 0
    page.get_by_label("Test card (Stripe test mode)").select_option("4242424242424242")
    shot(page, "checkout")
    page.locator("[data-place-order]").click()
    page.wait_for_url(re.compile(r"/shop/orders/"))
    assert page.locator("[data-payment-status]").text_content() == "paid"
    assert page.locator("[data-delivery-status]").text_content() == "awaiting dispatch"
    assert page.get_by_role("link", name=re.compile(r"Invoice INV-")).is_visible()
    shot(page, "order-paid")
    assert page.errors == []


def test_localstripe_signs_and_delivers_the_webhook_that_pays_the_order(shop_server, localstripe_url, settings):
    """End to end with no shortcut: the order is paid by the webhook localstripe itself signs and sends."""
    import uuid

    import httpx

    base, shop = shop_server
    hook_id = f"serena-{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=10) as h:
        on = h.post(f"{localstripe_url}/_config/webhooks/{hook_id}",
                    json={"url": f"{base}/v1/payments/stripe/webhook", "secret": settings.stripe_webhook_secret})
        assert on.status_code == 200
        try:
            token = h.post(f"{base}/v1/cart", json={}).json()["token"]
            h.put(f"{base}/v1/cart/lines/{shop.variant_ids[1]}", json={"quantity": 1}, headers={"X-Cart-Token": token})
            window = h.post(f"{base}/v1/checkout/quote", json={"lat": shop.lat, "lng": shop.lng}).json()["windows"][0]["start"]
            pm = h.post(f"{localstripe_url}/v1/payment_methods", headers={"Authorization": "Bearer sk_test_x"},
                        data={"type": "card", "card[number]": "4000002760003184", "card[exp_month]": "12",
                              "card[exp_year]": "2034", "card[cvc]": "123"}).json()["id"]
            order = h.post(f"{base}/v1/checkout", headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())},
                           json={"email": "w@example.test", "name": "Webhook Test", "address": "Esplanadi 1",
                                 "lat": shop.lat, "lng": shop.lng, "window_start": window, "payment_method_id": pm}).json()
            assert order["payment_status"] == "action_required"
            h.post(f"{localstripe_url}/v1/payment_intents/{order['payment']['provider_ref']}/_authenticate",
                   data={"client_secret": order["payment"]["client_secret"], "success": "true"},
                   headers={"Authorization": "Bearer sk_test_x"})
            deadline = time.monotonic() + 20  # localstripe sends its webhooks about a second after the event
            while True:
                view = h.get(f"{base}/v1/track/{order['tracking_token']}").json()
                if view["payment_status"] == "paid" or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        finally:
            # localstripe cannot delete a webhook: narrow this one to an event that never happens.
            off = h.post(f"{localstripe_url}/_config/webhooks/{hook_id}",
                         json={"url": f"{base}/v1/payments/stripe/webhook", "secret": settings.stripe_webhook_secret,
                               "events": ["never.happens"]})
            assert off.status_code == 200
    assert (view["payment_status"], view["delivery_status"]) == ("paid", "awaiting_dispatch")
    assert any(e["type"] == "paid" and e["data"].get("via") == "webhook" for e in view["timeline"])


def test_three_d_secure_in_the_storefront_ends_paid_after_the_bank_step(shop_server, page):
    base, shop = shop_server
    page.goto(f"{base}/shop/p/{shop.slug}")
    page.get_by_role("button", name="Add to cart").click()
    page.goto(f"{base}/shop/checkout?" + "&".join([
        "name=Eero", "email=eero%40example.test", "phone=", "address=Bulevardi+2", f"lat={shop.lat + 0.001}",
        f"lng={shop.lng}"]))
    page.get_by_label("Test card (Stripe test mode)").select_option("4000002760003184")
    page.locator("[data-place-order]").click()
    page.wait_for_url(re.compile(r"/shop/orders/"))
    assert page.locator("[data-payment-status]").text_content() == "action required"
    shot(page, "order-3ds")
    page.get_by_role("button", name="Authenticate (test bank)").click()
    page.wait_for_url(re.compile(r"/shop/orders/"))
    assert page.locator("[data-payment-status]").text_content() == "paid"
    assert page.errors == []
