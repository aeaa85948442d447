"""Events in, messages out, through a real `serena worker` (Celery worker + notifications consumer) on real Redis and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from pathlib import Path

from core.events import Event
from core.rbac import Role
from notifications import channels
from tests.notifications.conftest import wait_for


def order_paid(*, email_addr: str | None = None, phone: str | None = None, locale: str = "en",
               number: str | None = None) -> Event:
    order_id = str(uuid.uuid4())
    return Event(event_id=uuid.uuid4(), type="order.paid", aggregate="order", aggregate_id=order_id,
                 payload={"order_id": order_id, "order_number": number or str(uuid.uuid4().int % 10**6),
                          "contact": {"name": "Eve O'Brien", "phone": phone, "email": email_addr, "locale": locale},
                          "window": {"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T12:00:00Z"},
                          "tracking_token": "tok-" + uuid.uuid4().hex})


def delivery_event(order_event: Event, type_: str, **extra) -> Event:
    job_id = str(uuid.uuid4())
    return Event(event_id=uuid.uuid4(), type=type_, aggregate="delivery", aggregate_id=job_id,
                 payload={"job_id": job_id, "reference": order_event.payload["order_number"], "source": "order",
                          "idempotency_key": f"order:{order_event.payload['order_id']}", "state": type_.split(".")[1],
                          "driver_id": 7, "attempts": 1, "reason": None, **extra})


CUSTOMER = ("email", "sms")


async def rows(pool, event: Event, channels: tuple[str, ...] = CUSTOMER) -> list:
    """The event's messages on `channels` (other tests' webhook endpoints may take the same event)."""
    return await pool.fetch("SELECT * FROM notifications WHERE event_id = $1 AND channel = ANY($2) ORDER BY id",
                            event.event_id, list(channels))


async def settled(pool, event: Event, n: int = 1, channels: tuple[str, ...] = CUSTOMER):
    """The event's rows once `n` of them exist and none is still queued or sending."""
    rs = await rows(pool, event, channels)
    return rs if len(rs) >= n and all(r["state"] in ("sent", "failed", "suppressed") for r in rs) else None


def eml_files(worker_settings, event: Event) -> list[Path]:
    return sorted((Path(worker_settings.data_dir) / "outbox").glob(f"*{event.event_id}.eml"))


async def test_order_paid_sends_one_confirmation_email(pool, publish, worker_settings, worker_process):
    ev = await publish(order_paid(email_addr="Eve.Customer@example.test", number="100042"))
    [row] = await wait_for(lambda: settled(pool, ev), what="the confirmation", proc=worker_process)
    assert (row["state"], row["channel"], row["kind"], row["recipient"]) == ("sent", "email", "order_confirmed",
                                                                           "eve.customer@example.test")
    [path] = eml_files(worker_settings, ev)
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "eve.customer@example.test"
    assert msg["Subject"] == "Order 100042 confirmed"
    text = msg.get_body(("plain",)).get_content()
    assert "Eve O'Brien" in text  # plain text is not HTML-escaped
    assert "/track/" + ev.payload["tracking_token"] in text
    assert "Eve O&#39;Brien" in msg.get_body(("html",)).get_content()  # the HTML part is


async def test_the_same_event_delivered_twice_sends_one_message(pool, publish, worker_settings, worker_process, redis):
    ev = order_paid(email_addr=f"twice-{uuid.uuid4().hex[:6]}@example.test")
    await publish(ev)
    await publish(ev)  # a relay re-send: a second stream entry with the same event id
    await wait_for(lambda: settled(pool, ev), what="the confirmation", proc=worker_process)

    async def both_acknowledged():
        groups = await redis.xinfo_groups(worker_settings.redis_prefix + "events")
        g = next(g for g in groups if g["name"] in (b"notifications", "notifications"))
        return g["pending"] == 0 and g.get("lag", 0) == 0

    await wait_for(both_acknowledged, what="both entries acknowledged", proc=worker_process)
    assert len(await rows(pool, ev)) == 1
    assert len(eml_files(worker_settings, ev)) == 1


async def test_locale_falls_back_to_english_and_finnish_is_used_when_there(pool, publish, worker_settings, worker_process):
    fi = await publish(order_paid(email_addr="fi@example.test", locale="fi-FI", number="7"))
    de = await publish(order_paid(email_addr="de@example.test", locale="de-DE", number="8"))
    [r_fi] = await wait_for(lambda: settled(pool, fi), what="finnish", proc=worker_process)
    [r_de] = await wait_for(lambda: settled(pool, de), what="german", proc=worker_process)
    assert (r_fi["locale"], r_fi["subject"]) == ("fi", "Tilaus 7 vahvistettu")
    assert (r_de["locale"], r_de["subject"]) == ("en", "Order 8 confirmed")


async def test_opted_out_channel_is_suppressed_and_the_next_channel_used(pool, publish, worker_settings, worker_process,
                                                                      client, make_account):
    support = await make_account(Role.SUPPORT)
    addr = f"quiet-{uuid.uuid4().hex[:6]}@example.test"
    resp = await client.put("/v1/notifications/preferences", headers=support.headers,
                            json={"recipient": addr.upper(), "channel": "email", "category": "transactional",
                                  "opted_out": True})
    assert resp.status_code == 200, resp.text
    ev = await publish(order_paid(email_addr=addr, phone="+358 40 1234567"))
    rs = await wait_for(lambda: settled(pool, ev, 2), what="both rows", proc=worker_process)
    by_channel = {r["channel"]: r for r in rs}
    assert by_channel["email"]["state"] == "suppressed"
    assert "opted out" in by_channel["email"]["last_error"]
    assert by_channel["sms"]["state"] == "sent"
    assert eml_files(worker_settings, ev) == []
    [sms] = (Path(worker_settings.data_dir) / "outbox" / "sms").glob(f"*{ev.event_id}.json")
    assert json.loads(sms.read_text())["to"] == "+358401234567"


async def test_delivery_events_reach_the_customer_through_the_stored_contact(pool, publish, worker_process):
    paid = await publish(order_paid(email_addr=f"c-{uuid.uuid4().hex[:6]}@example.test", phone="+35840999"))
    await wait_for(lambda: settled(pool, paid), what="confirmation", proc=worker_process)
    arriving = Event(event_id=uuid.uuid4(), type="stop.arriving", payload={
        "driver_id": 7, "stop_id": str(uuid.uuid4()), "order_id": paid.payload["order_id"], "distance_m": 400})
    arriving_again = Event(event_id=uuid.uuid4(), type="stop.arriving", payload=dict(arriving.payload))
    done = delivery_event(paid, "delivery.completed")
    for ev in (arriving, arriving_again, done):
        await publish(ev)
    a = await wait_for(lambda: settled(pool, arriving, 2), what="arriving soon", proc=worker_process)
    assert sorted(r["channel"] for r in a) == ["email", "sms"] and {r["kind"] for r in a} == {"arriving_soon"}
    [d] = await wait_for(lambda: settled(pool, done), what="delivered", proc=worker_process)
    assert (d["kind"], d["channel"], d["state"]) == ("delivered", "email", "sent")
    assert await rows(pool, arriving_again) == []  # once per delivery attempt


async def test_delivery_completed_posts_a_signed_webhook(pool, publish, worker_process, receiver, client, make_account):
    admin = await make_account(Role.ADMIN)
    resp = await client.post("/v1/notifications/webhooks", headers=admin.headers, json={
        "subscriber": "shop-erp", "url": receiver.url("/signed"), "event_types": ["delivery.completed"]})
    assert resp.status_code == 201, resp.text
    secret = resp.json()["secret"]
    paid = order_paid()
    ev = await publish(delivery_event(paid, "delivery.completed"))
    [row] = await wait_for(lambda: settled(pool, ev, channels=("webhook",)), what="the webhook", proc=worker_process)
    assert row["state"] == "sent", row["last_error"]
    [req] = receiver.for_path("/signed")
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert channels.verify(secret, req["body"], headers["serena-signature"])
    assert not channels.verify("whsec_wrong", req["body"], headers["serena-signature"])
    assert headers["idempotency-key"] == str(ev.event_id)
    body = json.loads(req["body"])
    assert (body["id"], body["type"], body["data"]["job_id"]) == (str(ev.event_id), "delivery.completed", ev.payload["job_id"])
    # listed for staff, without the secret
    listed = (await client.get("/v1/notifications/webhooks", headers=admin.headers)).json()
    assert all("secret" not in ep for ep in listed)
    await client.delete(f"/v1/notifications/webhooks/{resp.json()['id']}", headers=admin.headers)


async def test_webhook_answering_500_twice_is_delivered_on_the_third_attempt_with_backoff(
        pool, publish, worker_process, receiver, client, make_account, worker_settings):
    admin = await make_account(Role.ADMIN)
    receiver.scripts["/flaky"] = [500, 500]
    resp = await client.post("/v1/notifications/webhooks", headers=admin.headers, json={
        "subscriber": "flaky", "url": receiver.url("/flaky"), "event_types": ["delivery.*"]})
    endpoint_id = resp.json()["id"]
    ev = await publish(delivery_event(order_paid(), "delivery.failed", reason="nobody home"))
    [row] = await wait_for(lambda: settled(pool, ev, channels=("webhook",)), what="the webhook", proc=worker_process)
    assert (row["state"], row["attempts"]) == ("sent", 3)
    log = (await client.get(f"/v1/notifications/webhooks/{endpoint_id}/deliveries", headers=admin.headers)).json()
    log.reverse()
    base = worker_settings.notifications_retry_backoff_s
    assert [(d["attempt"], d["status_code"], d["retry_in_s"]) for d in log] == [(1, 500, base), (2, 500, 2 * base),
                                                                                (3, 200, None)]
    reqs = receiver.for_path("/flaky")
    assert [r["status"] for r in reqs] == [500, 500, 200]
    assert len({r["headers"]["Idempotency-Key"] for r in reqs}) == 1  # the receiver can drop repeats
    await client.delete(f"/v1/notifications/webhooks/{endpoint_id}", headers=admin.headers)


async def test_a_bad_webhook_url_is_refused_with_a_reason(client, make_account):
    admin = await make_account(Role.ADMIN)
    for url, reason in [("ftp://example.com/hook", "http:// or https://"), ("file:///etc/passwd", "http:// or https://"),
                        ("https://user:pw@example.com/h", "credentials")]:
        resp = await client.post("/v1/notifications/webhooks", headers=admin.headers,
                                 json={"subscriber": "x", "url": url, "event_types": ["order.paid"]})
        assert resp.status_code == 422, url
        assert reason in resp.json()["detail"]
    dispatcher_no_rights = await make_account(Role.SUPPORT)
    resp = await client.post("/v1/notifications/webhooks", headers=dispatcher_no_rights.headers,
                             json={"subscriber": "x", "url": "https://example.com/h", "event_types": ["order.paid"]})
    assert resp.status_code == 403


async def test_one_click_unsubscribe_link_stops_the_next_emails(pool, publish, worker_settings, worker_process, client):
    addr = f"leaver-{uuid.uuid4().hex[:6]}@example.test"
    first = await publish(order_paid(email_addr=addr))
    await wait_for(lambda: settled(pool, first), what="first confirmation", proc=worker_process)
    [path] = eml_files(worker_settings, first)
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = msg["List-Unsubscribe"].strip("<>")
    assert link in msg.get_body(("html",)).get_content()
    resp = await client.post("/" + link.split("://", 1)[1].split("/", 1)[1])
    assert resp.status_code == 200, resp.text
    assert (resp.json()["recipient"], resp.json()["channel"], resp.json()["opted_out"]) == (addr, "email", True)
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    assert (await client.post("/" + forged.split("://", 1)[1].split("/", 1)[1])).status_code == 422
    second = await publish(order_paid(email_addr=addr))
    [row] = await wait_for(lambda: settled(pool, second), what="second order", proc=worker_process)
    assert row["state"] == "suppressed"
    assert eml_files(worker_settings, second) == []
