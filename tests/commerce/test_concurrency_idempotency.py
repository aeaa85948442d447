"""Stock is reserved atomically; a retried checkout never makes a second order or a second charge."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from commerce.cart import service as cart_service
from tests.commerce.conftest import card, make_shop
from tests.commerce.test_checkout_flow import checkout_body, first_window, guest_cart


class CountingProvider:
    """The real provider, counting the intents it is asked to create."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.created = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def create_intent(self, **kw):
        self.created += 1
        await asyncio.sleep(0.05)  # widen the window in which a concurrent retry could sneak in
        return await self.inner.create_intent(**kw)


async def test_200_concurrent_checkouts_for_10_units_make_exactly_10_orders(shop_app, client, sessions):
    shop = await make_shop(sessions, stock=10)
    variant = shop.variant_ids[0]
    async with sessions() as db, db.begin():  # 200 guest carts, made directly: the race is what is under test
        carts = []
        for _ in range(200):
            cart = await cart_service.create(db=db, currency="EUR")
            await cart_service.set_line(db=db, cart=cart, variant_id=variant, quantity=1)
            carts.append(cart.token)
    window = await first_window(client, shop)

    async def buy(token: str):
        return await client.post("/v1/checkout", json=checkout_body(shop, window, payment_method="cash_on_delivery"),
                                 headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})

    responses = await asyncio.gather(*(buy(t) for t in carts))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 10, codes
    assert codes.count(409) == 190
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"out_of_stock"}
    async with sessions() as db:
        left = (await db.execute(text("SELECT quantity FROM stock WHERE variant_id = :v AND depot_id = :d"),
                                 {"v": variant, "d": shop.depot_id})).scalar_one()
        orders = (await db.execute(text("SELECT count(*) FROM orders WHERE depot_id = :d"), {"d": shop.depot_id})).scalar_one()
        held = (await db.execute(text("SELECT sum(quantity) FROM stock_reservations WHERE variant_id = :v"),
                                 {"v": variant})).scalar_one()
    assert (left, orders, held) == (0, 10, 10)


async def test_retrying_a_checkout_with_the_same_key_gives_one_order_and_one_charge(shop_app, client, shop, localstripe_url,
                                                                                  stripe_provider, sessions):
    counting = CountingProvider(stripe_provider)
    shop_app.state.commerce_provider = counting
    try:
        token = await guest_cart(client, shop.variant_ids[0])
        body = checkout_body(shop, await first_window(client, shop), payment_method_id=await card(localstripe_url))
        headers = {"X-Cart-Token": token, "Idempotency-Key": f"retry-{uuid.uuid4()}"}
        # A double click: five identical requests at once, then a retry after the answer was lost.
        burst = await asyncio.gather(*(client.post("/v1/checkout", json=body, headers=headers) for _ in range(5)))
        again = await client.post("/v1/checkout", json=body, headers=headers)
    finally:
        shop_app.state.commerce_provider = stripe_provider
    assert sorted(r.status_code for r in burst) == [200, 200, 200, 200, 201]
    assert again.status_code == 200
    ids = {r.json()["id"] for r in [*burst, again]}
    assert len(ids) == 1
    assert counting.created == 1
    assert again.json()["payment_status"] == "paid"
    async with sessions() as db:
        n_orders = (await db.execute(text("SELECT count(*) FROM orders WHERE checkout_key = :k"),
                                     {"k": headers["Idempotency-Key"]})).scalar_one()
        n_paid_events = (await db.execute(text("SELECT count(*) FROM outbox WHERE type = 'order.paid' AND aggregate_id = :id"),
                                          {"id": ids.pop()})).scalar_one()
    assert (n_orders, n_paid_events) == (1, 1)


async def test_the_same_key_with_a_different_checkout_is_refused(shop_app, client, shop):
    token = await guest_cart(client, shop.variant_ids[0])
    window = await first_window(client, shop)
    key = str(uuid.uuid4())
    first = await client.post("/v1/checkout", json=checkout_body(shop, window, payment_method="cash_on_delivery"),
                              headers={"X-Cart-Token": token, "Idempotency-Key": key})
    assert first.status_code == 201
    other = await client.post("/v1/checkout", json=checkout_body(shop, window, payment_method="bank_transfer"),
                              headers={"X-Cart-Token": token, "Idempotency-Key": key})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"


async def test_a_checkout_without_an_idempotency_key_is_refused(shop_app, client, shop):
    token = await guest_cart(client, shop.variant_ids[0])
    resp = await client.post("/v1/checkout", json=checkout_body(shop, await first_window(client, shop),
                                                                payment_method="cash_on_delivery"),
                             headers={"X-Cart-Token": token})
    assert resp.status_code == 422 and "Idempotency-Key" in resp.json()["detail"]


async def test_a_provider_outage_keeps_the_order_and_a_retry_with_the_key_pays_it(shop_app, client, shop, localstripe_url,
                                                                                  stripe_provider):
    from commerce.payments.provider import ProviderUnavailable

    class Down(CountingProvider):
        async def create_intent(self, **kw):
            raise ProviderUnavailable("payment provider unavailable: APIConnectionError")

    token = await guest_cart(client, shop.variant_ids[0])
    body = checkout_body(shop, await first_window(client, shop), payment_method_id=await card(localstripe_url))
    headers = {"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())}
    shop_app.state.commerce_provider = Down(stripe_provider)
    try:
        down = await client.post("/v1/checkout", json=body, headers=headers)
    finally:
        shop_app.state.commerce_provider = stripe_provider
    assert down.status_code == 503 and down.json()["error"] == "payment_unavailable"
    retry = await client.post("/v1/checkout", json=body, headers=headers)
    assert retry.status_code == 200 and retry.json()["payment_status"] == "paid"
