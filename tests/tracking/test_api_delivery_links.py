"""A delivery from the public API has no commerce order: its tracking links name the job, and
they expire after its delivery like a shop order's."""

from __future__ import annotations

import time
import uuid

from core.events import Event
from tracking import links
from tracking.events import handle_delivery_completed


async def test_links_of_an_api_delivery_expire_after_its_delivery(pool):
    job_id = str(uuid.uuid4())
    token = await links.issue(pool, order_id=job_id, ttl_s=86400)
    payload = {"job_id": job_id, "order_id": None, "idempotency_key": "api:ref-1", "ts": time.time() - 7200}
    async with pool.acquire() as conn, conn.transaction():
        await handle_delivery_completed(conn, Event(uuid.uuid4(), "delivery.completed", payload), grace_s=3600)
    assert await links.resolve(pool, token=token) is None
