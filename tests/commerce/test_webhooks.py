"""Stripe webhooks: verified by signature, replays and re-deliveries ignored, out-of-order reports never move a payment back."""

from __future__ import annotations

import time
import uuid

import httpx
from sqlalchemy import text

from tests.commerce.conftest import card, intent_event, signed
from tests.commerce.test_checkout_flow import checkout_body, first_window, guest_cart


async def _three_ds_order(client, shop, localstripe_url) -> dict:
    token = await guest_cart(client, shop.variant_ids[0])
    resp = await client.post("/v1/checkout", json=checkout_body(shop, await first_window(client, shop),
                                                                payment_method_id=await card(localstripe_url, "4000002760003184")),
                             headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _authenticate(localstripe_url: str, order: dict) -> None:
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{localstripe_url}/v1/payment_intents/{order['payment']['provider_ref']}/_authenticate",
                         data={"client_secret": order["payment"]["client_secret"], "success": "true"},
                         headers={"Authorization": "Bearer sk_test"})
        assert r.status_code == 200


async def _intent(provider, ref: str) -> dict:
    return (await provider.client.v1.payment_intents.retrieve_async(ref)).to_dict()


async def _post(client, secret: str, event: dict, *, ts: int | None = None):
    body, sig = signed(secret, event, ts=ts)
    return await client.post("/v1/payments/stripe/webhook", content=body,
                             headers={"Stripe-Signature": sig, "Content-Type": "application/json"})


async def _counts(sessions, order_id: str) -> tuple[int, int, str]:
    async with sessions() as db:
        events = (await db.execute(text("SELECT count(*) FROM outbox WHERE type = 'order.paid' AND aggregate_id = :id"),
                                   {"id": order_id})).scalar_one()
        charged = (await db.execute(text("SELECT count(*) FROM payment_events e JOIN payment_transactions t "
                                         "ON t.id = e.transaction_id WHERE t.order_id = :id AND e.type = "
                                         "'payment_intent.succeeded'"), {"id": order_id})).scalar_one()
        status = (await db.execute(text("SELECT payment_status FROM orders WHERE id = :id"), {"id": order_id})).scalar_one()
    return events, charged, status


async def test_a_webhook_delivered_twice_pays_the_order_once(shop_app, client, shop, localstripe_url, stripe_provider,
                                                            stripe_settings, sessions):
    order = await _three_ds_order(client, shop, localstripe_url)
    await _authenticate(localstripe_url, order)
    event = intent_event(await _intent(stripe_provider, order["payment"]["provider_ref"]), "payment_intent.succeeded")
    first = await _post(client, stripe_settings.stripe_webhook_secret, event)
    second = await _post(client, stripe_settings.stripe_webhook_secret, event)
    assert first.status_code == second.status_code == 200
    assert (first.json()["applied"], second.json()["applied"]) == (True, False)
    assert second.json()["reason"] == "duplicate delivery"
    # The customer's page also asks for the state after 3-D Secure: still one payment, one event.
    await client.post(f"/v1/checkout/orders/{order['tracking_token']}/refresh-payment")
    assert await _counts(sessions, order["id"]) == (1, 1, "paid")


async def test_a_late_stale_event_after_success_changes_nothing(shop_app, client, shop, localstripe_url, stripe_provider,
                                                               stripe_settings, sessions):
    order = await _three_ds_order(client, shop, localstripe_url)
    stale = intent_event(await _intent(stripe_provider, order["payment"]["provider_ref"]), "payment_intent.requires_action")
    await _authenticate(localstripe_url, order)
    succeeded = intent_event(await _intent(stripe_provider, order["payment"]["provider_ref"]), "payment_intent.succeeded")
    failed_obj = dict(succeeded["data"]["object"], status="requires_payment_method",
                      last_payment_error={"message": "stale failure"})
    failed = intent_event(failed_obj, "payment_intent.payment_failed")
    assert (await _post(client, stripe_settings.stripe_webhook_secret, succeeded)).json()["applied"]
    # Delivered out of order after the success: recorded in the event list, no effect on the state.
    assert (await _post(client, stripe_settings.stripe_webhook_secret, stale)).status_code == 200
    assert (await _post(client, stripe_settings.stripe_webhook_secret, failed)).status_code == 200
    events, charged, status = await _counts(sessions, order["id"])
    assert (events, charged, status) == (1, 1, "paid")
    async with sessions() as db:
        n = (await db.execute(text("SELECT count(*) FROM payment_events e JOIN payment_transactions t ON t.id = e.transaction_id "
                                   "WHERE t.order_id = :id AND e.provider_event_id IS NOT NULL"), {"id": order["id"]})).scalar_one()
        tx_status = (await db.execute(text("SELECT status FROM payment_transactions WHERE order_id = :id"),
                                      {"id": order["id"]})).scalar_one()
    assert (n, tx_status) == (3, "succeeded")


async def test_a_forged_or_replayed_old_webhook_is_refused(shop_app, client, shop, localstripe_url, stripe_provider,
                                                          stripe_settings, sessions):
    order = await _three_ds_order(client, shop, localstripe_url)
    await _authenticate(localstripe_url, order)
    event = intent_event(await _intent(stripe_provider, order["payment"]["provider_ref"]), "payment_intent.succeeded")
    forged = await _post(client, "whsec_not_ours", event)
    assert forged.status_code == 400 and forged.json()["error"] == "bad_signature"
    old = await _post(client, stripe_settings.stripe_webhook_secret, event, ts=int(time.time()) - 3600)
    assert old.status_code == 400  # a captured delivery replayed an hour later
    unsigned = await client.post("/v1/payments/stripe/webhook", json=event)
    assert unsigned.status_code == 400
    assert await _counts(sessions, order["id"]) == (0, 0, "action_required")


async def test_a_lost_provider_answer_is_recovered_by_the_webhook_without_a_second_charge(
        shop_app, client, shop, localstripe_url, stripe_provider, stripe_settings, sessions):
    """The API dies between Stripe creating the intent and us recording it: the webhook finds the
    transaction through the intent's metadata, and the client's retry sees the payment done."""
    from tests.commerce.test_concurrency_idempotency import CountingProvider

    class AnswerLost(CountingProvider):
        intent = None

        async def create_intent(self, **kw):
            self.created += 1
            AnswerLost.intent = await self.inner.create_intent(**kw)
            raise ConnectionResetError("connection lost after the provider answered")

    lost = AnswerLost(stripe_provider)
    token = await guest_cart(client, shop.variant_ids[0])
    body = checkout_body(shop, await first_window(client, shop), payment_method_id=await card(localstripe_url))
    headers = {"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())}
    shop_app.state.commerce_provider = lost
    try:
        try:
            await client.post("/v1/checkout", json=body, headers=headers)
        except ConnectionResetError:
            pass  # the in-process transport re-raises what the handler raised: the request died
    finally:
        shop_app.state.commerce_provider = stripe_provider
    pi = await _intent(stripe_provider, AnswerLost.intent.ref)
    assert pi["status"] == "succeeded"  # Stripe charged; we recorded nothing
    hook = await _post(client, stripe_settings.stripe_webhook_secret, intent_event(pi, "payment_intent.succeeded"))
    assert hook.json()["applied"] is True
    counting = CountingProvider(stripe_provider)
    shop_app.state.commerce_provider = counting
    try:
        retry = await client.post("/v1/checkout", json=body, headers=headers)
    finally:
        shop_app.state.commerce_provider = stripe_provider
    assert retry.status_code == 200 and retry.json()["payment_status"] == "paid"
    assert retry.json()["payment"]["provider_ref"] == pi["id"]
    assert counting.created == 0 and lost.created == 1
    assert await _counts(sessions, retry.json()["id"]) == (1, 1, "paid")
