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


async def test_no_row_lock_or_transaction_is_held_while_the_provider_is_called(shop_app, client, shop, localstripe_url,
                                                                             stripe_provider, sessions):
    """During create_intent, the payment row and the invoice counter can be locked by someone else (NOWAIT) and the
    calling request has no transaction open: checkouts do not queue behind each other's provider calls."""
    seen: dict[str, object] = {}

    class Probing(CountingProvider):
        async def create_intent(self, **kw):
            async with sessions() as db, db.begin():
                await db.execute(text("SET LOCAL lock_timeout = '1ms'"))
                seen["tx"] = (await db.execute(text(
                    "SELECT status FROM payment_transactions WHERE id = :id FOR UPDATE NOWAIT"),
                    {"id": kw["metadata"]["transaction_id"]})).scalar_one()
                seen["counter"] = (await db.execute(text(
                    "SELECT next_value FROM invoice_counters WHERE series = 'INV' FOR UPDATE NOWAIT"))).scalar_one()
                seen["open"] = (await db.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND state LIKE 'idle in transaction%' AND query ILIKE '%payment_transactions%'"))).scalar_one()
            return await self.inner.create_intent(**kw)

    token = await guest_cart(client, shop.variant_ids[0])
    body = checkout_body(shop, await first_window(client, shop), payment_method_id=await card(localstripe_url))
    shop_app.state.commerce_provider = Probing(stripe_provider)
    try:
        resp = await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    finally:
        shop_app.state.commerce_provider = stripe_provider
    assert resp.status_code == 201 and resp.json()["payment_status"] == "paid"
    assert resp.json()["invoice_number"].startswith("INV-")
    assert seen["tx"] == "submitting"  # claimed, committed, not locked
    assert seen["open"] == 0


async def test_concurrent_card_checkouts_give_one_paid_order_and_one_charge_each(shop_app, client, localstripe_url,
                                                                                 stripe_provider, sessions):
    shop = await make_shop(sessions, stock=30)
    counting = CountingProvider(stripe_provider)
    window = await first_window(client, shop)

    async def buy() -> object:
        token = await guest_cart(client, shop.variant_ids[0])
        body = checkout_body(shop, window, payment_method_id=await card(localstripe_url))
        return await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})

    shop_app.state.commerce_provider = counting
    try:
        responses = await asyncio.gather(*(buy() for _ in range(20)))
    finally:
        shop_app.state.commerce_provider = stripe_provider
    assert [r.status_code for r in responses] == [201] * 20
    assert counting.created == 20
    ids = [r.json()["id"] for r in responses]
    async with sessions() as db:
        rows = (await db.execute(text("""
            SELECT o.payment_status, o.invoice_number, t.status, t.provider_ref,
                   (SELECT count(*) FROM outbox WHERE type = 'order.paid' AND aggregate_id = o.id::text) AS paid_events
            FROM orders o JOIN payment_transactions t ON t.order_id = o.id WHERE o.id = ANY(CAST(:ids AS uuid[]))
        """), {"ids": ids})).all()
    assert len(rows) == 20
    assert {(r.payment_status, r.status, r.paid_events) for r in rows} == {("paid", "succeeded", 1)}
    assert len({r.invoice_number for r in rows}) == 20 and len({r.provider_ref for r in rows}) == 20
