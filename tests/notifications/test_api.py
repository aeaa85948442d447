"""The staff API of notifications: webhook endpoints (secret shown once, rotation, audit), recent messages, preferences."""

from __future__ import annotations

import uuid

from core.rbac import Role
from notifications.rules import Handler
from tests.notifications.test_flow import order_paid


async def test_webhook_secret_is_shown_at_creation_and_rotation_only(client, make_account, pool):
    admin = await make_account(Role.ADMIN)
    created = (await client.post("/v1/notifications/webhooks", headers=admin.headers, json={
        "subscriber": "erp", "url": "https://hooks.example.com/serena", "event_types": ["delivery.*"]})).json()
    assert created["secret"].startswith("whsec_")
    ep = f"/v1/notifications/webhooks/{created['id']}"
    assert "secret" not in (await client.get(ep, headers=admin.headers)).json()
    plain = (await client.patch(ep, headers=admin.headers, json={"active": False})).json()
    assert plain["secret"] is None and plain["active"] is False
    rotated = (await client.patch(ep, headers=admin.headers, json={"rotate_secret": True})).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    bad = await client.patch(ep, headers=admin.headers, json={"event_types": ["Delivery Completed!"]})
    assert bad.status_code == 422 and "pattern" in bad.json()["detail"]
    assert (await client.delete(ep, headers=admin.headers)).status_code == 204
    assert (await client.get(ep, headers=admin.headers)).status_code == 404
    actions = [r["action"] for r in await pool.fetch(
        "SELECT action FROM audit_log WHERE object_type = 'webhook_endpoint' AND object_id = $1 ORDER BY id", str(created["id"]))]
    assert actions == ["notifications.webhook.create", "notifications.webhook.update", "notifications.webhook.update",
                       "notifications.webhook.delete"]


async def test_support_sees_an_orders_messages_and_a_recipients_preferences(client, make_account, sessions, settings):
    support = await make_account(Role.SUPPORT)
    ev = order_paid(email_addr=f"list-{uuid.uuid4().hex[:6]}@example.test", phone="+3584012")
    async with sessions() as db, db.begin():
        await Handler(settings=settings, enqueue=lambda ids: None)(db, ev)
    listed = (await client.get("/v1/notifications", headers=support.headers,
                               params={"order_id": ev.payload["order_id"]})).json()
    assert [(n["channel"], n["kind"], n["state"]) for n in listed] == [("email", "order_confirmed", "queued")]
    by_phone = (await client.get("/v1/notifications", headers=support.headers, params={"recipient": "+358 4012"})).json()
    assert by_phone == [] or all(n["recipient"] == "+3584012" for n in by_phone)
    addr = ev.payload["contact"]["email"]
    put = await client.put("/v1/notifications/preferences", headers=support.headers,
                           json={"recipient": addr, "channel": "*", "category": "marketing", "opted_out": False})
    assert [(p["channel"], p["category"], p["opted_out"]) for p in put.json()] == [("*", "marketing", False)]
    got = (await client.get("/v1/notifications/preferences", headers=support.headers, params={"recipient": addr})).json()
    assert got == put.json()
