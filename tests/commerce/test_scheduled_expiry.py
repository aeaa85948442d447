"""Unpaid orders expire on a schedule, with nobody running `serena commerce expire`: a real `serena worker`.

The worker (Celery with its embedded beat, on this test worker's database, its own Redis
prefix and this worker's localstripe) runs the expiry every 2 s here. Orders are made old
by moving `created_at` back, which is what the expiry compares with the limit.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from serena import periodic
from tests.commerce.conftest import card
from tests.commerce.test_checkout_flow import checkout_body, first_window, guest_cart
from tests.notifications.conftest import start_worker, stop_worker

SCHEDULE_WAIT_S = 120.0  # a worker's start (Celery prefork + beat) under a loaded 2-core box, plus a few intervals


async def _order(client, shop, localstripe_url, *, quantity: int, card_number: str) -> dict:
    token = await guest_cart(client, shop.variant_ids[0], quantity)
    body = checkout_body(shop, await first_window(client, shop), payment_method_id=await card(localstripe_url, card_number))
    resp = await client.post("/v1/checkout", json=body, headers={"X-Cart-Token": token, "Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _state(sessions, order_id: str) -> tuple[str, str]:
    async with sessions() as db:
        row = (await db.execute(text("SELECT status, payment_status FROM orders WHERE id = :id"), {"id": order_id})).one()
    return str(row[0]), str(row[1])


async def _in_stock(client, shop) -> int:
    return (await client.get(f"/v1/catalog/products/{shop.slug}")).json()["variants"][0]["in_stock"]


async def test_the_worker_cancels_an_old_unpaid_order_on_its_own_and_leaves_paid_and_recent_ones(
        shop_app, client, shop, localstripe_url, settings, sessions, tmp_path):
    abandoned = await _order(client, shop, localstripe_url, quantity=4, card_number="4000002760003184")  # 3-D Secure, never done
    recent = await _order(client, shop, localstripe_url, quantity=2, card_number="4000002760003184")
    paid = await _order(client, shop, localstripe_url, quantity=1, card_number="4242424242424242")
    assert abandoned["payment_status"] == recent["payment_status"] == "action_required" and paid["payment_status"] == "paid"
    assert await _in_stock(client, shop) == 3
    async with sessions() as db, db.begin():  # two hours old: past the 1-hour card limit
        await db.execute(text("UPDATE orders SET created_at = now() - interval '2 hours' WHERE id IN (:a, :p)"),
                         {"a": abandoned["id"], "p": paid["id"]})

    prefix = f"serena:test:periodic:{uuid.uuid4().hex[:8]}:"
    worker_settings = settings.model_copy(update={"redis_prefix": prefix, "data_dir": tmp_path})
    proc = start_worker(worker_settings, SERENA_STRIPE_API_BASE=localstripe_url, SERENA_COMMERCE_EXPIRE_INTERVAL_S="2",
                        SERENA_COMMERCE_UNPAID_CARD_S="3600")
    try:
        deadline = time.monotonic() + SCHEDULE_WAIT_S
        while (await _state(sessions, abandoned["id"]))[0] != "cancelled":
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            await asyncio.sleep(0.5)
    finally:
        stop_worker(proc)
    assert await _state(sessions, abandoned["id"]) == ("cancelled", "voided")
    assert await _in_stock(client, shop) == 7  # the 4 held by the abandoned order are back
    assert await _state(sessions, recent["id"]) == ("placed", "action_required")  # 0 minutes old: not yet
    assert await _state(sessions, paid["id"]) == ("confirmed", "paid")  # two hours old, but paid
    log = (tmp_path / "worker.log").read_text()
    assert "expired 1 unpaid orders" in log


async def test_of_many_workers_sending_a_job_in_one_interval_only_one_runs_it(settings):
    r = aioredis.from_url(settings.redis_url)
    prefix = f"{settings.redis_prefix}{uuid.uuid4().hex[:8]}:"
    try:
        claims = await asyncio.gather(*[periodic.claim_run(r, prefix, "job", interval_s=1.0) for _ in range(8)])
        assert sorted(claims) == [False] * 7 + [True]
        ttl_ms = await r.pttl(periodic.run_key(prefix, "job"))
        assert 0 < ttl_ms <= 900  # 90 % of the interval: the next interval's first send runs again
        await asyncio.sleep(ttl_ms / 1000 + 0.05)
        assert await periodic.claim_run(r, prefix, "job", interval_s=1.0)
        assert not await periodic.claim_run(r, prefix, "job", interval_s=1.0)
    finally:
        await r.delete(periodic.run_key(prefix, "job"))
        await r.aclose()


@pytest.mark.parametrize("job", ["expire-unpaid-orders", "prune-processed-events"])
def test_every_periodic_job_is_scheduled_on_the_periodic_queue_with_an_expiry(settings, job):
    from serena.commands.worker import celery_command, make_celery

    schedule = make_celery(settings).conf.beat_schedule
    assert schedule[job]["options"]["queue"] == periodic.QUEUE and schedule[job]["options"]["expires"] > 0
    cmd = celery_command(settings, concurrency=1)
    assert "-B" in cmd and periodic.QUEUE in cmd[cmd.index("-Q") + 1].split(",")


async def test_serena_commerce_expire_cancels_by_hand_with_the_limits_given(shop_app, client, shop, localstripe_url, settings,
                                                                            sessions):
    import os
    import subprocess
    import sys

    from tests.notifications.conftest import REPO

    order = await _order(client, shop, localstripe_url, quantity=3, card_number="4000002760003184")
    async with sessions() as db, db.begin():
        await db.execute(text("UPDATE orders SET created_at = now() - interval '20 minutes' WHERE id = :id"), {"id": order["id"]})
    env = {**os.environ, "SERENA_ENV": "test", "SERENA_STRIPE_API_BASE": localstripe_url, "SERENA_REDIS_URL": settings.redis_url}

    def expire(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "serena.cli", "commerce", "expire", "--database-url", settings.database_url,
                              *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    await asyncio.to_thread(expire)  # the default limit (1 hour) spares a 20-minute-old order
    assert await _state(sessions, order["id"]) == ("placed", "action_required")
    assert "unpaid orders cancelled" in await asyncio.to_thread(expire, "--card-minutes", "15")
    assert await _state(sessions, order["id"]) == ("cancelled", "voided")
