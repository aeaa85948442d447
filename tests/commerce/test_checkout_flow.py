"""The whole purchase through the API: find, cart, quote, guest checkout with a test card via the real Stripe SDK
against localstripe, order paid, `order.paid` on the event stream."""

from __future__ import annotations

import json
import uuid

from core import events
from core.relay import Relay
from tests.commerce.conftest import card


async def guest_cart(client, variant_id: int, quantity: int = 1) -> str:
    token = (await client.post("/v1/cart", json={})).json()["token"]
    resp = await client.put(f"/v1/cart/lines/{variant_id}", json={"quantity": quantity}, headers={"X-Cart-Token": token})
    assert resp.status_code == 200, resp.text
    return token


async def first_window(client, shop) -> str:
    quote = (await client.post("/v1/checkout/quote", json={"lat": shop.lat, "lng": shop.lng})).json()
    return quote["windows"][0]["start"]


def checkout_body(shop, window: str, **extra) -> dict:
    return {"email": "guest@example.test", "name": "Aino Virtanen", "phone": "+358401234567",
            "address": "Mannerheimintie 1 A 3, 00100 Helsinki", "lat": shop.lat + 0.001, "lng": shop.lng + 0.001,
            "window_start": window, **extra}


async def test_guest_finds_a_product_pays_by_card_and_order_paid_reaches_the_stream(shop_app, client, shop, localstripe_url,
                                                                                     settings, redis):
    found = (await client.get("/v1/catalog/search", params={"q": shop.word})).json()
    assert [i["slug"] for i in found["items"]] == [shop.slug]
    product = (await client.get(f"/v1/catalog/products/{shop.slug}")).json()
    variant = product["variants"][0]
    assert variant["price"] == "24.90" and variant["in_stock"] == 10

    token = await guest_cart(client, variant["id"], 2)
    quote = (await client.post("/v1/checkout/quote", json={"lat": shop.lat, "lng": shop.lng})).json()
    assert quote["distance_source"] == "haversine_estimate"
    assert quote["windows"], "there are open delivery windows"

    pm = await card(localstripe_url)
    resp = await client.post("/v1/checkout", json=checkout_body(shop, quote["windows"][0]["start"], payment_method_id=pm),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert (order["status"], order["payment_status"], order["delivery_status"]) == ("confirmed", "paid", "awaiting_dispatch")
    assert order["payment"]["charged"] == order["total"] and order["payment"]["provider_ref"].startswith("pi_")
    assert order["invoice_number"].startswith("INV-")
    # 2 × 24.90 incl. 25.5 % VAT + delivery fee (3.90 base + 0.40/km)
    assert order["subtotal"] == "49.80"

    tracked = (await client.get(f"/v1/track/{order['tracking_token']}")).json()
    assert tracked["payment_status"] == "paid"
    assert [e["type"] for e in tracked["timeline"]][:3] == ["placed", "paid", "handed_to_dispatch"]

    await Relay(pool=shop_app.state.pg_pool, redis=redis, prefix=settings.redis_prefix).drain()
    entries = await redis.xrange(events.stream_key(settings.redis_prefix))
    paid = [e for _, e in entries if e[b"type"] == b"order.paid" and e[b"aggregate_id"].decode() == order["id"]]
    assert len(paid) == 1
    payload = json.loads(paid[0][b"payload"])
    assert payload["order_number"] == order["number"]
    assert payload["contact"] == {"name": "Aino Virtanen", "phone": "+358401234567", "email": "guest@example.test"}
    assert payload["dropoff"]["address"].startswith("Mannerheimintie")
    assert abs(payload["dropoff"]["lat"] - (shop.lat + 0.001)) < 1e-9
    assert payload["window"]["start"].endswith("Z") and payload["window"]["end"] > payload["window"]["start"]
    assert payload["weight_kg"] == 1.6 and payload["volume_l"] == 8.0 and payload["parcels"] == 1
    assert payload["pickup_depot_id"] == shop.depot_id
    assert payload["skills"] == [] and payload["priority"] == 0
    assert payload["payment"] == {"method": "card", "collect": "0", "currency": "EUR"}
    # the flat aliases dispatch's parser reads
    assert (payload["recipient_name"], payload["window_start"], payload["depot_id"]) == (
        "Aino Virtanen", payload["window"]["start"], shop.depot_id)
    # Contract check against the consumer itself (tests may import any room; commerce never imports dispatch).
    from dispatch import service as dispatch_service

    key, job = dispatch_service.request_from_order_paid(payload)
    assert key == f"order:{order['id']}"
    assert (job.depot_id, job.recipient_phone, job.parcels) == (shop.depot_id, "+358401234567", 1)
    assert job.window_start.isoformat().startswith(payload["window"]["start"][:16])


async def test_an_address_outside_every_zone_is_refused_before_payment(shop_app, client, shop, localstripe_url):
    token = await guest_cart(client, shop.variant_ids[0])
    window = await first_window(client, shop)
    far = {"lat": shop.lat + 1.0, "lng": shop.lng}
    quote = await client.post("/v1/checkout/quote", json=far)
    assert quote.status_code == 422 and quote.json()["error"] == "outside_delivery_area"
    body = checkout_body(shop, window, payment_method_id=await card(localstripe_url)) | far
    resp = await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 422 and resp.json()["error"] == "outside_delivery_area"
    assert "outside every delivery zone" in resp.json()["detail"]
    product = (await client.get(f"/v1/catalog/products/{shop.slug}")).json()
    assert product["variants"][0]["in_stock"] == 10  # nothing reserved


async def test_a_declined_card_cancels_the_order_and_releases_the_stock(shop_app, client, shop, localstripe_url):
    token = await guest_cart(client, shop.variant_ids[0], 3)
    window = await first_window(client, shop)
    resp = await client.post("/v1/checkout", json=checkout_body(shop, window,
                                                                payment_method_id=await card(localstripe_url, "4000000000000341")),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 402, resp.text
    body = resp.json()
    assert body["error"] == "payment_declined" and "declined" in body["detail"]
    assert (body["order"]["status"], body["order"]["payment_status"]) == ("cancelled", "failed")
    product = (await client.get(f"/v1/catalog/products/{shop.slug}")).json()
    assert product["variants"][0]["in_stock"] == 10


async def test_three_d_secure_needs_action_then_completes_after_authentication(shop_app, client, shop, localstripe_url):
    token = await guest_cart(client, shop.variant_ids[1])
    window = await first_window(client, shop)
    resp = await client.post("/v1/checkout", json=checkout_body(shop, window,
                                                                payment_method_id=await card(localstripe_url, "4000002760003184")),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert order["payment_status"] == "action_required" and order["delivery_status"] == "not_ready"
    secret = order["payment"]["client_secret"]
    assert secret
    # The customer's bank step (Stripe.js / localstripe's mock of it)
    auth = await shop_app.state.commerce_provider.client.v1.payment_intents.retrieve_async(order["payment"]["provider_ref"])
    import httpx

    async with httpx.AsyncClient() as h:
        r = await h.post(f"{localstripe_url}/v1/payment_intents/{auth.id}/_authenticate",
                         data={"client_secret": secret, "success": "true"}, headers={"Authorization": "Bearer sk_test"})
        assert r.status_code == 200, r.text
    refreshed = (await client.post(f"/v1/checkout/orders/{order['tracking_token']}/refresh-payment")).json()
    assert (refreshed["payment_status"], refreshed["delivery_status"]) == ("paid", "awaiting_dispatch")


async def test_cash_on_delivery_goes_to_dispatch_with_the_amount_to_collect(shop_app, client, shop, sessions):
    token = await guest_cart(client, shop.variant_ids[0])
    window = await first_window(client, shop)
    resp = await client.post("/v1/checkout", json=checkout_body(shop, window, payment_method="cash_on_delivery"),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert (order["status"], order["payment_status"], order["delivery_status"]) == ("confirmed", "pending", "awaiting_dispatch")
    async with sessions() as db:
        from sqlalchemy import text

        payload = (await db.execute(text("SELECT payload FROM outbox WHERE type = 'order.paid' AND aggregate_id = :id"),
                                    {"id": order["id"]})).scalar_one()
    assert payload["payment"] == {"method": "cash_on_delivery", "collect": order["total"], "currency": "EUR"}
