"""Orders after checkout: coupons and caps, loyalty earn/reverse/redeem, refunds, cancellation, returns, invoices,
delivery outcomes from dispatch's events, cart merge at sign-in."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from commerce.orders import events as order_events
from commerce.promotions import service as promotions
from core.consumer import Consumer
from core.events import Event, emit
from core.rbac import Role
from core.relay import Relay
from tests.commerce.conftest import card, make_shop
from tests.commerce.test_checkout_flow import checkout_body, first_window, guest_cart


async def customer_order(client, shop, account, localstripe_url, *, quantity=2, **extra) -> dict:
    h = account.headers
    await client.put(f"/v1/cart/lines/{shop.variant_ids[0]}", json={"quantity": quantity}, headers=h)
    body = checkout_body(shop, await first_window(client, shop), payment_method_id=await card(localstripe_url), **extra)
    body["email"] = account.email
    resp = await client.post("/v1/checkout", json=body, headers={**h, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def deliver(app, settings, order_id: str, type_: str = "delivery.completed", **payload) -> None:
    handler = order_events.make_handler(settings=settings, provider=app.state.commerce_provider)
    async with app.state.sessions() as db, db.begin():
        await handler(db, Event(event_id=uuid.uuid4(), type=type_, payload={"order_id": order_id, **payload}))


async def test_a_coupon_applies_with_minimum_spend_caps_and_keeps_its_campaign(shop_app, client, sessions, make_account):
    shop = await make_shop(sessions, stock=50)
    marketing = await make_account(Role.MARKETING)
    code = f"AUTUMN{uuid.uuid4().hex[:6]}".upper()
    resp = await client.post("/v1/promotions", json={"name": "Autumn", "kind": "percentage", "value": "10", "code": code,
                                                     "currency": "EUR", "min_spend": "40", "per_customer_cap": 1,
                                                     "global_cap": 3, "campaign_id": "autumn-2026"},
                             headers=marketing.headers)
    assert resp.status_code == 201, resp.text
    window = await first_window(client, shop)

    async def buy(email: str, qty: int):
        token = await guest_cart(client, shop.variant_ids[0], qty)
        body = checkout_body(shop, window, payment_method="cash_on_delivery", coupon=code.lower()) | {"email": email}
        return await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})

    too_small = await buy("a@example.test", 1)
    assert too_small.status_code == 422 and "minimum spend" in too_small.json()["detail"]
    ok = await buy("a@example.test", 2)
    assert ok.status_code == 201, ok.text
    order = ok.json()
    assert order["discount_total"] == "4.98" and order["coupon_code"] == code
    again = await buy("A@example.test", 2)
    assert again.status_code == 422 and "already used" in again.json()["detail"]
    # Five more customers race for the two uses left under the global cap.
    racers = await asyncio.gather(*(buy(f"r{i}@example.test", 2) for i in range(5)))
    assert sorted(r.status_code for r in racers) == [201, 201, 422, 422, 422]
    async with sessions() as db:
        used = (await db.execute(text("SELECT redemptions FROM promotions WHERE code = :c"), {"c": code})).scalar_one()
        campaigns = {r.campaign_id for r in (await db.execute(
            text("SELECT campaign_id FROM orders WHERE coupon_code = :c"), {"c": code})).all()}
    assert used == 3 and campaigns == {"autumn-2026"}


async def test_an_expired_coupon_is_refused(shop_app, client, shop, sessions):
    code = f"OLD{uuid.uuid4().hex[:6]}".upper()
    async with sessions() as db, db.begin():
        await promotions.create(db=db, name="old", kind="free_delivery", code=code,
                                ends_at=datetime.now(UTC) - timedelta(days=1))
    token = await guest_cart(client, shop.variant_ids[0])
    body = checkout_body(shop, await first_window(client, shop), payment_method="cash_on_delivery", coupon=code)
    resp = await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 422 and "expired" in resp.json()["detail"]


async def test_loyalty_points_are_credited_on_delivery_reversed_on_refund_and_redeemable(
        shop_app, client, shop, make_account, localstripe_url, settings):
    customer = await make_account(Role.CUSTOMER)
    support = await make_account(Role.SUPPORT)
    order = await customer_order(client, shop, customer, localstripe_url)
    await deliver(shop_app, settings, order["id"])
    await deliver(shop_app, settings, order["id"])  # a redelivered event changes nothing
    mine = (await client.get("/v1/loyalty", headers=customer.headers)).json()
    # Silver: 1 % of the goods (49.80 EUR) = 0.498 EUR = 49 points of 0.01 EUR
    assert mine["tier"] == "silver" and mine["balance"] == 49
    assert [e["kind"] for e in mine["entries"]] == ["earn"]

    refund = await client.post(f"/v1/staff/orders/{order['id']}/refunds", json={"amount": "24.90", "reason": "damaged"},
                               headers={**support.headers, "Idempotency-Key": "r1"})
    assert refund.status_code == 201, refund.text
    again = await client.post(f"/v1/staff/orders/{order['id']}/refunds", json={"amount": "24.90", "reason": "damaged"},
                              headers={**support.headers, "Idempotency-Key": "r1"})
    assert again.json()["id"] == refund.json()["id"]  # same key, same refund
    assert refund.json()["payment_status"] == "partially_refunded"
    mine = (await client.get("/v1/loyalty", headers=customer.headers)).json()
    assert mine["balance"] == 25  # half the goods refunded: 24 of 49 points taken back

    second = await customer_order(client, shop, customer, localstripe_url, quantity=1, points=25)
    assert second["points_redeemed"] == 25 and second["discount_total"] == "0.25"
    assert (await client.get("/v1/loyalty", headers=customer.headers)).json()["balance"] == 0
    view = (await client.get(f"/v1/orders/{order['id']}", headers=customer.headers)).json()
    assert view["payment"]["refunded"] == "24.90"
    assert [o["id"] for o in (await client.get("/v1/orders", headers=customer.headers)).json()][:2] == [second["id"], order["id"]]


async def test_cancelling_before_pickup_refunds_restocks_and_tells_dispatch(shop_app, client, shop, make_account,
                                                                           localstripe_url, sessions):
    customer = await make_account(Role.CUSTOMER)
    order = await customer_order(client, shop, customer, localstripe_url)
    resp = await client.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "changed my mind"}, headers=customer.headers)
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert (view["status"], view["payment_status"], view["delivery_status"]) == ("cancelled", "refunded", "cancelled")
    assert view["payment"]["refunded"] == view["payment"]["charged"]
    product = (await client.get(f"/v1/catalog/products/{shop.slug}")).json()
    assert product["variants"][0]["in_stock"] == 10
    async with sessions() as db:
        types = set((await db.execute(text("SELECT type FROM outbox WHERE aggregate_id = :id"), {"id": order["id"]})).scalars())
    assert {"order.paid", "order.cancelled", "order.refunded"} <= types
    other = await make_account(Role.CUSTOMER)
    assert (await client.get(f"/v1/orders/{order['id']}", headers=other.headers)).status_code == 404


async def test_a_failed_attempt_refunds_nothing_and_a_later_delivery_completes_the_order(shop_app, client, shop, make_account,
                                                                                          localstripe_url, settings):
    customer = await make_account(Role.CUSTOMER)
    order = await customer_order(client, shop, customer, localstripe_url)
    await deliver(shop_app, settings, order["id"], "delivery.failed", reason="nobody home", attempts=1)
    view = (await client.get(f"/v1/orders/{order['id']}", headers=customer.headers)).json()
    assert (view["status"], view["payment_status"], view["delivery_status"]) == ("confirmed", "paid", "failed")
    await deliver(shop_app, settings, order["id"], "delivery.completed")
    view = (await client.get(f"/v1/orders/{order['id']}", headers=customer.headers)).json()
    assert (view["status"], view["payment_status"], view["delivery_status"]) == ("completed", "paid", "delivered")


async def test_a_delivery_given_up_refunds_the_card_and_restocks(shop_app, client, shop, make_account, localstripe_url,
                                                               settings, sessions):
    customer = await make_account(Role.CUSTOMER)
    order = await customer_order(client, shop, customer, localstripe_url)
    async with sessions() as db:
        number = (await db.execute(text("SELECT number FROM orders WHERE id = :id"), {"id": order["id"]})).scalar_one()
    handler = order_events.make_handler(settings=settings, provider=shop_app.state.commerce_provider)
    # As dispatch sends them: no order_id, the order in idempotency_key and the number in reference.
    for type_ in ("delivery.failed", "delivery.returned"):
        async with sessions() as db, db.begin():
            await handler(db, Event(event_id=uuid.uuid4(), type=type_, payload={
                "job_id": str(uuid.uuid4()), "reference": str(number), "source": "order",
                "idempotency_key": f"order:{order['id']}", "state": type_.split(".")[1], "attempts": 3,
                "reason": "nobody home, three attempts"}))
    view = (await client.get(f"/v1/orders/{order['id']}", headers=customer.headers)).json()
    assert (view["status"], view["payment_status"], view["delivery_status"]) == ("cancelled", "refunded", "returned")
    assert (await client.get(f"/v1/catalog/products/{shop.slug}")).json()["variants"][0]["in_stock"] == 10


async def test_cash_is_settled_by_the_delivery_scan_through_the_real_consumer(shop_app, client, shop, settings, redis, sessions):
    token = await guest_cart(client, shop.variant_ids[0])
    resp = await client.post("/v1/checkout", json=checkout_body(shop, await first_window(client, shop),
                                                                payment_method="cash_on_delivery"),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    order = resp.json()
    async with sessions() as db, db.begin():
        await emit(db, type="delivery.completed", payload={"order_id": order["id"], "cash_collected": True})
    relay = Relay(pool=shop_app.state.pg_pool, redis=redis, prefix=settings.redis_prefix)
    await relay.drain()
    async with sessions() as db, db.begin():  # the relay crashed after XADD: the row is sent again
        await db.execute(text("UPDATE outbox SET relayed_at = NULL WHERE type = 'delivery.completed' "
                              "AND payload->>'order_id' = :id"), {"id": order["id"]})
    await relay.drain()
    consumer = Consumer(group=order_events.GROUP, db=sessions, redis=redis, prefix=settings.redis_prefix,
                        types=order_events.CONSUMES, block_ms=50,
                        handler=order_events.make_handler(settings=settings, provider=shop_app.state.commerce_provider))
    await consumer.run_until_idle()
    view = (await client.get(f"/v1/track/{order['tracking_token']}")).json()
    assert (view["status"], view["payment_status"], view["delivery_status"]) == ("completed", "paid", "delivered")
    assert view["payment"]["charged"] == view["total"] and view["invoice_number"]
    assert [e["type"] for e in view["timeline"]].count("delivered") == 1


async def test_invoices_are_numbered_in_sequence_and_rendered_as_pdf(shop_app, client, shop, make_account, localstripe_url):
    customer = await make_account(Role.CUSTOMER)
    a = await customer_order(client, shop, customer, localstripe_url, quantity=1)
    b = await customer_order(client, shop, customer, localstripe_url, quantity=1)
    na, nb = int(a["invoice_number"].split("-")[1]), int(b["invoice_number"].split("-")[1])
    assert nb > na
    pdf = await client.get(f"/v1/orders/{a['id']}/invoice.pdf", headers=customer.headers)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    guest = await client.get(f"/v1/track/{b['tracking_token']}/invoice.pdf")
    assert guest.status_code == 200 and guest.content.startswith(b"%PDF")


async def test_a_bank_transfer_order_waits_for_staff_then_goes_to_dispatch(shop_app, client, shop, make_account, sessions):
    support = await make_account(Role.SUPPORT)
    token = await guest_cart(client, shop.variant_ids[0])
    resp = await client.post("/v1/checkout", json=checkout_body(shop, await first_window(client, shop),
                                                                payment_method="bank_transfer"),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    order = resp.json()
    assert (order["status"], order["payment_status"], order["delivery_status"]) == ("placed", "pending", "not_ready")
    done = await client.post(f"/v1/staff/orders/{order['id']}/bank-transfer", json={"reference": "RF18 1234"},
                             headers=support.headers)
    assert done.status_code == 200, done.text
    assert (done.json()["payment_status"], done.json()["delivery_status"]) == ("paid", "awaiting_dispatch")
    async with sessions() as db:
        audited = (await db.execute(text("SELECT count(*) FROM audit_log WHERE action = 'order.bank_transfer_confirmed' "
                                         "AND object_id = :id"), {"id": order["id"]})).scalar_one()
    assert audited == 1


async def test_a_return_moves_through_its_workflow_and_refunds_on_receipt(shop_app, client, shop, make_account,
                                                                         localstripe_url, settings):
    customer = await make_account(Role.CUSTOMER)
    support = await make_account(Role.SUPPORT)
    order = await customer_order(client, shop, customer, localstripe_url)
    early = await client.post(f"/v1/orders/{order['id']}/returns", json={"kind": "return", "items": [
        {"line_id": order["lines"][0]["id"], "quantity": 1}]}, headers=customer.headers)
    assert early.status_code == 409  # not delivered yet
    await deliver(shop_app, settings, order["id"])
    ret = await client.post(f"/v1/orders/{order['id']}/returns", json={"kind": "return", "reason": "too small", "items": [
        {"line_id": order["lines"][0]["id"], "quantity": 1}]}, headers=customer.headers)
    assert ret.status_code == 201, ret.text
    rid = ret.json()["id"]
    skip = await client.post(f"/v1/staff/returns/{rid}", json={"to": "received"}, headers=support.headers)
    assert skip.status_code == 409
    for step in ("approved", "received"):
        r = await client.post(f"/v1/staff/returns/{rid}", json={"to": step}, headers=support.headers)
        assert r.status_code == 200, r.text
    assert r.json() == {"id": rid, "kind": "return", "status": "refunded", "refund_amount": "24.90"}
    view = (await client.get(f"/v1/orders/{order['id']}", headers=customer.headers)).json()
    assert view["payment_status"] == "partially_refunded" and view["lines"][0]["returned_quantity"] == 1


async def test_a_guest_cart_merges_into_the_customer_cart_at_sign_in(shop_app, client, shop, make_account):
    customer = await make_account(Role.CUSTOMER)
    await client.put(f"/v1/cart/lines/{shop.variant_ids[0]}", json={"quantity": 1}, headers=customer.headers)
    token = await guest_cart(client, shop.variant_ids[0], 2)
    await client.put(f"/v1/cart/lines/{shop.variant_ids[1]}", json={"quantity": 1}, headers={"X-Cart-Token": token})
    merged = await client.post("/v1/cart/merge", json={"guest_token": token}, headers=customer.headers)
    assert merged.status_code == 200, merged.text
    assert {ln["variant_id"]: ln["quantity"] for ln in merged.json()["lines"]} == {shop.variant_ids[0]: 3, shop.variant_ids[1]: 1}
    assert (await client.get("/v1/cart", headers={"X-Cart-Token": token})).status_code == 404


async def test_a_changed_price_is_caught_at_checkout(shop_app, client, shop, sessions):
    token = await guest_cart(client, shop.variant_ids[0])
    async with sessions() as db, db.begin():
        await db.execute(text("UPDATE variant_prices SET amount = 29.90 WHERE variant_id = :v AND currency = 'EUR'"),
                         {"v": shop.variant_ids[0]})
    body = checkout_body(shop, await first_window(client, shop), payment_method="cash_on_delivery", expected_total="28.80")
    resp = await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 409 and resp.json()["error"] == "price_changed"
    assert Decimal(resp.json()["detail"].split("now ")[1].split()[0]) > Decimal("28.80")


async def test_an_abandoned_3ds_payment_expires_and_gives_the_stock_back(shop_app, client, shop, localstripe_url, sessions):
    from commerce.orders import service as orders_service

    token = await guest_cart(client, shop.variant_ids[0], 4)
    resp = await client.post("/v1/checkout", json=checkout_body(shop, await first_window(client, shop),
                                                                payment_method_id=await card(localstripe_url, "4000002760003184")),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    order = resp.json()
    assert order["payment_status"] == "action_required"
    assert (await client.get(f"/v1/catalog/products/{shop.slug}")).json()["variants"][0]["in_stock"] == 6
    async with sessions() as db, db.begin():
        n = await orders_service.expire_unpaid(db=db, provider=shop_app.state.commerce_provider,
                                               now=datetime.now(UTC) + timedelta(hours=2))
    assert n >= 1
    view = (await client.get(f"/v1/track/{order['tracking_token']}")).json()
    assert (view["status"], view["payment_status"]) == ("cancelled", "voided")
    assert (await client.get(f"/v1/catalog/products/{shop.slug}")).json()["variants"][0]["in_stock"] == 10


async def test_the_best_automatic_promotion_applies_without_a_code(shop_app, client, shop, sessions):
    # SEK baskets only (with a minimum spend), so checkouts of other tests in EUR are not affected.
    campaign = f"sek-{uuid.uuid4().hex[:6]}"
    async with sessions() as db, db.begin():
        await promotions.create(db=db, name="Free delivery in SEK", kind="free_delivery", currency="SEK",
                                min_spend=Decimal("200"), campaign_id=campaign, ends_at=datetime.now(UTC) + timedelta(minutes=10))
        await promotions.create(db=db, name="1 % off in SEK", kind="percentage", value=Decimal("1"), currency="SEK",
                                min_spend=Decimal("200"), campaign_id="small", ends_at=datetime.now(UTC) + timedelta(minutes=10))
    token = (await client.post("/v1/cart", json={"currency": "SEK"})).json()["token"]
    await client.put(f"/v1/cart/lines/{shop.variant_ids[0]}", json={"quantity": 1}, headers={"X-Cart-Token": token})
    body = checkout_body(shop, await first_window(client, shop), payment_method="cash_on_delivery")
    resp = await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    order = resp.json()
    # Free delivery is worth more than 1 % of 279 SEK (2.79), so it wins; promotions never stack.
    assert (order["currency"], order["delivery_fee"], order["discount_total"], order["total"]) == ("SEK", "0.00", "0.00", "279.00")
    async with sessions() as db:
        got = (await db.execute(text("SELECT campaign_id FROM orders WHERE id = :id"), {"id": order["id"]})).scalar_one()
    assert got == campaign


async def test_an_exchange_restocks_the_return_reserves_the_replacement_and_ships_it(shop_app, client, shop, make_account,
                                                                                    localstripe_url, settings, sessions):
    customer = await make_account(Role.CUSTOMER)
    support = await make_account(Role.SUPPORT)
    order = await customer_order(client, shop, customer, localstripe_url, quantity=1)
    await deliver(shop_app, settings, order["id"])
    ret = await client.post(f"/v1/orders/{order['id']}/returns", headers=customer.headers, json={
        "kind": "exchange", "reason": "wrong size",
        "items": [{"line_id": order["lines"][0]["id"], "quantity": 1, "exchange_variant_id": shop.variant_ids[1]}]})
    assert ret.status_code == 201, ret.text
    for step in ("approved", "received"):
        r = await client.post(f"/v1/staff/returns/{ret.json()['id']}", json={"to": step}, headers=support.headers)
        assert r.status_code == 200, r.text
    assert r.json()["status"] == "exchanged"
    stock = {v["id"]: v["in_stock"] for v in (await client.get(f"/v1/catalog/products/{shop.slug}")).json()["variants"]}
    assert stock == {shop.variant_ids[0]: 10, shop.variant_ids[1]: 9}
    async with sessions() as db:
        payload = (await db.execute(text("SELECT payload FROM outbox WHERE type = 'order.exchange' AND aggregate_id = :id"),
                                    {"id": order["id"]})).scalar_one()
    assert payload["order_id"] == order["id"] and payload["lines"][0]["exchange_variant_id"] == shop.variant_ids[1]
    view = (await client.get(f"/v1/orders/{order['id']}", headers=customer.headers)).json()
    assert view["payment_status"] == "paid"  # nothing refunded for an exchange
