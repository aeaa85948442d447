"""The consumer's handler in-process: rows appear only with the commit, are enqueued only after it, and lost enqueues are recovered."""

from __future__ import annotations

import uuid

import pytest

from core.events import Event
from notifications import events as nevents
from notifications import sender
from notifications.rules import Handler
from serena.commands.platform import process_specs
from tests.notifications.test_flow import order_paid


async def _ids(pool, ev: Event) -> list[int]:
    return [r["id"] for r in await pool.fetch("SELECT id FROM notifications WHERE event_id = $1 AND channel = 'email'",
                                              ev.event_id)]


async def test_messages_are_enqueued_only_after_the_commit_and_never_for_a_rollback(sessions, pool, settings):
    enqueued: list[int] = []
    handler = Handler(settings=settings, enqueue=enqueued.extend)
    ev = order_paid(email_addr=f"rb-{uuid.uuid4().hex[:6]}@example.test")
    with pytest.raises(RuntimeError):
        async with sessions() as db, db.begin():
            await handler(db, ev)
            raise RuntimeError("the consumer's batch failed")
    assert enqueued == [] and await _ids(pool, ev) == []
    async with sessions() as db, db.begin():
        await handler(db, ev)
        assert enqueued == []  # not before the commit
    assert enqueued == await _ids(pool, ev) and len(enqueued) == 1


async def test_an_enqueue_lost_after_the_commit_is_recovered_by_the_sweep(sessions, pool, settings, redis):
    def broker_down(ids):
        raise ConnectionError("redis went away")

    consumer = nevents.make_consumer(settings=settings, sessions=sessions, redis=redis, enqueue=broker_down)
    ev = order_paid(email_addr=f"lost-{uuid.uuid4().hex[:6]}@example.test")
    await redis.xadd(settings.redis_prefix + "events", ev.to_fields())
    await consumer.run_until_idle()
    [nid] = await _ids(pool, ev)
    assert consumer.stats["processed"] >= 1  # the event is done: the failed enqueue did not fail it
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM notifications WHERE id = $1", nid) == "queued"
        assert nid in await sender.recover(conn, settings=settings, requeue_after_s=-1)


def test_serena_up_runs_the_worker(settings):
    assert "worker" in [s.name for s in process_specs(settings)]


async def test_an_arriving_soon_notice_for_a_stale_event_is_recorded_not_sent(sessions, pool, settings):
    from datetime import UTC, datetime, timedelta

    enqueued: list[int] = []
    handler = Handler(settings=settings, enqueue=enqueued.extend)
    paid = order_paid(email_addr=f"late-{uuid.uuid4().hex[:6]}@example.test")
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    arriving = Event(event_id=uuid.uuid4(), type="stop.arriving", created_at=old,
                     payload={"driver_id": 1, "stop_id": "s", "order_id": paid.payload["order_id"]})
    async with sessions() as db, db.begin():
        await handler(db, paid)
        await handler(db, arriving)
    [row] = await pool.fetch("SELECT state, last_error FROM notifications WHERE event_id = $1", arriving.event_id)
    assert row["state"] == "suppressed" and "only useful within 30 min" in row["last_error"]
    assert len(enqueued) == 1  # the confirmation only
