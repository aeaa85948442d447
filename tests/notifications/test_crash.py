"""A `serena worker` killed -9 while a webhook POST is in flight: the replacement sends it again with the same Idempotency-Key."""

from __future__ import annotations

import os
import signal
import threading
import uuid

from core.events import Event
from core.rbac import Role
from tests.notifications.conftest import start_worker, stop_worker, wait_for, wipe_prefix


async def test_worker_killed_mid_webhook_is_replaced_and_the_post_repeated_with_its_key(
        pool, client, make_account, receiver, worker_settings, redis):
    s = worker_settings.model_copy(update={"redis_prefix": f"serena:test:notif-crash:{uuid.uuid4().hex[:8]}:"})
    admin = await make_account(Role.ADMIN)
    path = f"/crash-{uuid.uuid4().hex[:6]}"
    gate = receiver.hold[path] = threading.Event()
    resp = await client.post("/v1/notifications/webhooks", headers=admin.headers, json={
        "subscriber": "crash", "url": receiver.url(path), "event_types": ["test.crash"]})
    endpoint_id = resp.json()["id"]
    ev = Event(event_id=uuid.uuid4(), type="test.crash", payload={"n": 1})
    first = start_worker(s, log_name="crash-1.log")
    try:
        await redis.xadd(s.redis_prefix + "events", ev.to_fields())
        await wait_for(lambda: receiver.for_path(path), what="the first POST", proc=first)
        os.killpg(first.pid, signal.SIGKILL)  # the consumer, the Celery child and its pool: all at once
        first.wait()
    finally:
        stop_worker(first)
        gate.set()
    row = await pool.fetchrow("SELECT id, state, attempts FROM notifications WHERE event_id = $1", ev.event_id)
    assert (row["state"], row["attempts"]) == ("sending", 1)
    # Age the claim instead of waiting SERENA_NOTIFICATIONS_STALE_SENDING_S: the sweep at start-up takes it.
    await pool.execute("UPDATE notifications SET sending_at = now() - interval '1 hour' WHERE id = $1", row["id"])

    second = start_worker(s, log_name="crash-2.log")
    try:
        async def sent():
            r = await pool.fetchrow("SELECT state, attempts FROM notifications WHERE id = $1", row["id"])
            return r if r["state"] == "sent" else None

        done = await wait_for(sent, what="the repeated POST", proc=second)
    finally:
        stop_worker(second)
        wipe_prefix(s)
    assert done["attempts"] == 2
    posts = receiver.for_path(path)
    assert len(posts) == 2
    assert posts[0]["headers"]["Idempotency-Key"] == posts[1]["headers"]["Idempotency-Key"] == str(ev.event_id)
    await client.delete(f"/v1/notifications/webhooks/{endpoint_id}", headers=admin.headers)
