"""The event bus on real PostgreSQL and Redis: emit in the caller's transaction, relay, consume once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from core import events, relay
from core.consumer import Consumer
from core.events import Event, emit
from core.relay import trim_stream
from tests.core.events_support import bus  # noqa: F401 - fixture




async def test_emit_inside_rolled_back_transaction_publishes_nothing(bus, pool, sessions):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pool.acquire() as conn, conn.transaction():
            await emit(conn, type="order.paid", payload={"order_id": 1}, aggregate="order", aggregate_id=1)
            raise Boom
    with pytest.raises(Boom):
        async with sessions() as session, session.begin():
            await emit(session, type="order.paid", payload={"order_id": 2}, aggregate="order", aggregate_id=2)
            raise Boom
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await bus.relay().drain() == 0
    assert await bus.redis.exists(bus.stream) == 0


async def test_emit_commits_with_the_callers_transaction_through_a_session_or_a_connection(bus, pool, sessions):
    async with sessions() as session, session.begin():
        sa_id = await emit(session, type="order.paid", payload={"total": __import__("decimal").Decimal("12.30")}, aggregate="order", aggregate_id=7)
    async with pool.acquire() as conn, conn.transaction():
        pg_id = await emit(conn, type="delivery.completed", payload={"job": uuid.UUID(int=5)})
    rows = await pool.fetch("SELECT event_id, type, aggregate, aggregate_id, payload FROM outbox ORDER BY id")
    assert [(r["event_id"], r["type"]) for r in rows] == [(sa_id, "order.paid"), (pg_id, "delivery.completed")]
    assert rows[0]["aggregate_id"] == "7"
    assert rows[0]["payload"] == '{"total": "12.30"}'  # money as text, never a float


async def test_emit_refuses_a_connection_outside_a_transaction(bus, pool):
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await emit(conn, type="order.paid", payload={})
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_emit_with_an_explicit_event_id_is_idempotent(bus, pool):
    eid = uuid.uuid4()
    for _ in range(2):  # a retried webhook
        async with pool.acquire() as conn, conn.transaction():
            assert await emit(conn, type="payment.captured", payload={}, event_id=eid) == eid
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_relay_sends_committed_rows_in_id_order_and_marks_them(bus, pool):
    ids = await bus.emit_n(25)
    relay = bus.relay(batch_size=10)
    assert await relay.drain() == 25
    entries = await bus.redis.xrange(bus.stream)
    assert [Event.from_fields(sid, f).event_id for sid, f in entries] == ids
    first = Event.from_fields(*entries[0])
    assert (first.type, first.aggregate, first.aggregate_id, first.payload) == ("test.happened", "test", "0", {"seq": 0})
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL") == 0
    assert await relay.drain() == 0


async def test_two_relays_at_once_never_send_the_same_row(bus, pool):
    await bus.emit_n(2000)
    a, b = bus.relay(batch_size=50), bus.relay(batch_size=50)
    sent = await asyncio.gather(a.drain(), b.drain())
    assert sum(sent) == 2000
    entries = await bus.redis.xrange(bus.stream)
    assert len({f["event_id"] for _, f in entries}) == len(entries) == 2000


async def test_consumer_applies_each_event_once_and_acknowledges(bus):
    ids = await bus.emit_n(250)
    await bus.relay().drain()
    consumer = bus.consumer(batch_size=40)
    await consumer.run_until_idle()
    assert sorted(await bus.effects()) == sorted(ids)
    assert consumer.stats["processed"] == 250
    assert (await bus.redis.xpending(bus.stream, "fx"))["pending"] == 0


async def test_the_same_event_relayed_twice_is_applied_once(bus, pool):
    (eid,) = await bus.emit_n(1)
    await bus.relay().drain()
    # The relay crashed after XADD and before marking the row: the restarted relay re-sends it.
    await pool.execute("UPDATE outbox SET relayed_at = NULL")
    await bus.relay().drain()
    assert await bus.redis.xlen(bus.stream) == 2
    consumer = bus.consumer()
    await consumer.run_until_idle()
    assert await bus.effects() == [eid]
    assert consumer.stats["processed"] == 1 and consumer.stats["duplicates"] == 1


async def test_a_consumer_crash_between_commit_and_ack_redelivers_but_does_not_reapply(bus):
    ids = await bus.emit_n(30)
    await bus.relay().drain()

    class Crash(BaseException):
        """Stands for kill -9: nothing after it runs."""

    class CrashBeforeAck(Consumer):
        async def _ack(self, sids):
            raise Crash

    crashing = CrashBeforeAck(group="fx", handler=bus.handler, db=bus.pool, redis=bus.redis, prefix=bus.prefix, name="c1", batch_size=10)
    with pytest.raises(Crash):
        await crashing.run_until_idle()
    assert len(await bus.effects()) == 10  # the first batch committed
    assert (await bus.redis.xpending(bus.stream, "fx"))["pending"] == 10  # but was never acknowledged

    restarted = bus.consumer(name="c1", batch_size=10)  # same name: re-reads its own pending entries first
    await restarted.run_until_idle()
    assert sorted(await bus.effects()) == sorted(ids)
    assert restarted.stats["duplicates"] == 10 and restarted.stats["processed"] == 20
    assert (await bus.redis.xpending(bus.stream, "fx"))["pending"] == 0


async def test_entries_of_a_dead_consumer_are_claimed_by_another(bus):
    ids = await bus.emit_n(20)
    await bus.relay().drain()
    # "dead" read everything and died before applying anything.
    await bus.redis.xgroup_create(bus.stream, "fx", id="0")
    await bus.redis.xreadgroup("fx", "dead", {bus.stream: ">"}, count=100)
    survivor = bus.consumer(name="alive", claim_idle_ms=0)
    await survivor.run_until_idle()
    assert sorted(await bus.effects()) == sorted(ids)
    assert (await bus.redis.xpending(bus.stream, "fx"))["pending"] == 0
    # The dead consumer owned nothing any more and had been idle, so the group forgot it.
    survivor.drop_idle_consumers_ms = 1
    await asyncio.sleep(0.01)
    await survivor.claim_stale()
    assert [c["name"] for c in await bus.redis.xinfo_consumers(bus.stream, "fx")] == ["alive"]


async def test_a_poison_event_is_dead_lettered_after_max_attempts_and_its_neighbours_still_apply(bus):
    ids = await bus.emit_n(10)
    await bus.relay().drain()
    poison = ids[3]

    async def handler(conn, event):
        if event.event_id == poison:
            raise ValueError("cannot price this order")
        await bus.handler(conn, event)

    consumer = bus.consumer(handler=handler, max_attempts=3, claim_idle_ms=0)
    for _ in range(3):  # each pass claims the pending poison entry again: one more attempt
        await consumer.run_until_idle()
    assert sorted(await bus.effects()) == sorted(i for i in ids if i != poison)
    assert consumer.stats["dead_lettered"] == 1 and consumer.stats["failures"] == 3
    (dead_id, dead), = await bus.redis.xrange(events.dead_letter_key(bus.prefix))
    assert dead["event_id"] == str(poison)
    assert dead["dead_group"] == "fx" and dead["dead_attempts"] == "3"
    assert "ValueError: cannot price this order" in dead["dead_error"]
    assert (await bus.redis.xpending(bus.stream, "fx"))["pending"] == 0
    # Another group is unaffected by this group's poison.
    other = bus.consumer(group="other", handler=lambda conn, ev: asyncio.sleep(0))
    await other.run_until_idle()
    assert other.stats["processed"] == 10


async def test_a_malformed_entry_is_dead_lettered_not_dropped(bus):
    await bus.redis.xadd(bus.stream, {"event_id": "not-a-uuid", "type": "x", "payload": "{}"})
    consumer = bus.consumer()
    await consumer.run_until_idle()
    assert consumer.stats["dead_lettered"] == 1
    (_, dead), = await bus.redis.xrange(events.dead_letter_key(bus.prefix))
    assert dead["event_id"] == "not-a-uuid" and "malformed" in dead["dead_error"]


async def test_a_consumer_ignores_types_it_does_not_take(bus, pool):
    async with pool.acquire() as conn, conn.transaction():
        keep = await emit(conn, type="delivery.completed", payload={"seq": 1})
        await emit(conn, type="order.paid", payload={"seq": 2})
        keep2 = await emit(conn, type="delivery.failed", payload={"seq": 3})
    await bus.relay().drain()
    consumer = bus.consumer(types=["delivery.*"])
    await consumer.run_until_idle()
    assert sorted(await bus.effects()) == sorted([keep, keep2])
    assert consumer.stats["ignored"] == 1
    assert (await bus.redis.xpending(bus.stream, "fx"))["pending"] == 0


async def test_a_handler_on_an_sqlalchemy_session_commits_with_the_processed_record(bus, pool, sessions):
    ids = await bus.emit_n(5)
    await bus.relay().drain()

    async def handler(session, event):
        await session.execute(text(f"INSERT INTO {bus.table} (event_id, seq) VALUES (:e, :s)"), {"e": event.event_id, "s": event.payload["seq"]})

    consumer = Consumer(group="orm", handler=handler, db=sessions, redis=bus.redis, prefix=bus.prefix, name="c1")
    await consumer.run_until_idle()
    await pool.execute("UPDATE outbox SET relayed_at = NULL")
    await bus.relay().drain()  # everything again
    await consumer.run_until_idle()
    assert sorted(await bus.effects()) == sorted(ids)
    assert consumer.stats["duplicates"] == 5
    assert await pool.fetchval("SELECT count(*) FROM processed_events WHERE consumer = 'orm'") == 5


async def test_trimming_never_removes_an_entry_a_group_has_not_acknowledged(bus):
    await bus.emit_n(300)
    await bus.relay().drain()
    slow, fast = bus.consumer(group="slow", batch_size=50), bus.consumer(group="fast", batch_size=300)
    await slow.ensure_group()
    await fast.run_until_idle()
    # "slow" has read 50 entries and not acknowledged them; the rest it has not read.
    await bus.redis.xreadgroup("slow", "s1", {bus.stream: ">"}, count=50)
    first_pending = (await bus.redis.xpending(bus.stream, "slow"))["min"]
    await trim_stream(bus.redis, bus.prefix, retention_s=0)
    assert await bus.redis.xlen(bus.stream) == 300
    assert (await bus.redis.xrange(bus.stream, count=1))[0][0] == first_pending
    # Once every group has acknowledged, entries past their retention go.
    slow.claim_idle_ms = 0
    await slow.run_until_idle()
    assert slow.stats["processed"] == 300
    await trim_stream(bus.redis, bus.prefix, retention_s=0)
    assert await bus.redis.xlen(bus.stream) < 300
    # ...but not those younger than the retention.
    await bus.emit_n(10)
    await bus.relay().drain()
    await fast.run_until_idle()
    await slow.run_until_idle()
    before = await bus.redis.xlen(bus.stream)
    await trim_stream(bus.redis, bus.prefix, retention_s=3600)
    assert await bus.redis.xlen(bus.stream) == before


async def test_a_second_relay_stands_by_until_the_leader_lets_go(bus):
    leader, standby = bus.relay(name="r1"), bus.relay(name="r2")
    assert await leader.hold_lease()
    assert not await standby.hold_lease()
    await leader.release_lease()
    assert await standby.hold_lease()
    assert not await leader.hold_lease()


async def test_a_leader_whose_lease_expired_does_not_renew_over_the_new_leader(bus):
    leader, other = bus.relay(name="r1", lease_ttl_s=10), bus.relay(name="r2")
    assert await leader.hold_lease()
    await bus.redis.delete(events.lease_key(bus.prefix))  # the lease ran out while the leader was paused
    assert await other.hold_lease()
    leader._renewed_at = 0.0  # due for renewal
    assert not await leader.hold_lease()
    assert await bus.redis.get(events.lease_key(bus.prefix)) == other.token


async def test_the_running_relay_is_woken_by_notify_not_only_by_polling(bus, pool):
    stop = asyncio.Event()
    relay = bus.relay(poll_interval_s=3600, lease_ttl_s=3600)  # only a notification can wake it within the test
    task = asyncio.create_task(relay.run(stop))
    try:
        while not relay.is_leader:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # let it reach its wait
        (eid,) = await bus.emit_n(1)
        reply = await bus.redis.xread({bus.stream: "0"}, block=20_000)
        assert reply and reply[0][1][0][1]["event_id"] == str(eid)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert await bus.redis.exists(events.lease_key(bus.prefix)) == 0  # released on stop


async def test_a_consumer_run_stops_when_asked_and_leaves_nothing_pending(bus):
    ids = await bus.emit_n(50)
    await bus.relay().drain()
    consumer = bus.consumer(block_ms=50)
    task = asyncio.create_task(consumer.run())
    while consumer.stats["processed"] < 50:
        await asyncio.sleep(0.01)
    consumer.stop()
    await asyncio.wait_for(task, 30)
    assert sorted(await bus.effects()) == sorted(ids)
    assert await bus.redis.xinfo_consumers(bus.stream, "fx") == []  # removed itself: nothing pending


async def test_stats_show_backlog_groups_and_dead_letters_and_requeue_brings_a_dead_letter_back(bus):
    ids = await bus.emit_n(6)
    await bus.relay().drain()
    await bus.emit_n(2)  # not relayed yet
    poison = ids[0]
    fixed = False

    async def handler(conn, event):
        if event.event_id == poison and not fixed:
            raise ValueError("bug")
        await bus.handler(conn, event)

    consumer = bus.consumer(handler=handler, max_attempts=1)
    await consumer.run_until_idle()
    s = await relay.bus_stats(pool=bus.pool, redis=bus.redis, prefix=bus.prefix)
    assert s["outbox_unrelayed"] == 2 and s["stream_length"] == 6 and s["dead_letters"] == 1
    assert s["groups"] == [{"name": "fx", "consumers": 1, "pending": 0, "lag": 0, "last_delivered_id": s["stream_last_id"]}]
    (dead,) = await relay.dead_letters(bus.redis, bus.prefix)
    assert dead["event_id"] == str(poison) and "ValueError: bug" in dead["dead_error"]

    fixed = True
    assert await relay.requeue_dead_letters(bus.redis, bus.prefix, [dead["dead_id"]]) == 1
    await consumer.run_until_idle()
    assert sorted(await bus.effects()) == sorted(ids)
    assert (await relay.bus_stats(pool=bus.pool, redis=bus.redis, prefix=bus.prefix))["dead_letters"] == 0


async def test_serena_events_relay_runs_as_a_process_and_stops_on_sigterm(bus, db_url, settings):
    ids = await bus.emit_n(100)
    env = {**os.environ, "SERENA_DATABASE_URL": db_url, "SERENA_REDIS_URL": settings.redis_url,
           "SERENA_REDIS_PREFIX": bus.prefix, "SERENA_ENV": "test"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from serena.commands.events import app; app()", "relay", "--poll-interval-s", "0.1",
        env=env, cwd=Path(__file__).resolve().parents[2], stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120  # a hang fails the test; not a performance assertion
        while await bus.redis.xlen(bus.stream) < 100:
            assert proc.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    entries = await bus.redis.xrange(bus.stream)
    assert [Event.from_fields(sid, f).event_id for sid, f in entries] == ids
    assert await bus.redis.exists(events.lease_key(bus.prefix)) == 0


def test_serena_events_stats_prints_json(settings, monkeypatch):
    from typer.testing import CliRunner

    from serena.commands.events import app

    monkeypatch.setenv("SERENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SERENA_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("SERENA_REDIS_PREFIX", settings.redis_prefix + "cli:")
    result = CliRunner().invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.output)
    assert s["stream"] == settings.redis_prefix + "cli:events" and s["groups"] == []


async def test_payload_text_survives_the_relay_unchanged(bus, pool):
    payload = {"note": "Café ☕ 🚚 \"quoted\" \\ back\nslash\ttab \u0001", "nested": {"list": [1, 2.5, None, True]}, "n": 10**15}
    async with pool.acquire() as conn, conn.transaction():
        eid = await emit(conn, type="order.note_added", payload=payload, aggregate="order", aggregate_id="ä-1")
    await bus.relay().drain()
    ((sid, fields),) = await bus.redis.xrange(bus.stream)
    ev = Event.from_fields(sid, fields)
    assert (ev.event_id, ev.payload, ev.aggregate_id) == (eid, payload, "ä-1")


async def test_a_transaction_that_commits_late_with_a_lower_id_is_still_relayed(bus, pool):
    async with pool.acquire() as slow:
        async with slow.transaction():
            early = await emit(slow, type="order.paid", payload={"seq": 1})  # takes the lower outbox id...
            (late,) = await bus.emit_n(1)  # ...but this one commits first
            assert await bus.relay().drain() == 1
    assert await bus.relay().drain() == 1
    assert [f["event_id"] for _, f in await bus.redis.xrange(bus.stream)] == [str(late), str(early)]


async def test_an_outage_inside_the_handler_is_retried_in_place_and_never_counts_as_an_attempt(bus):
    ids = await bus.emit_n(3)
    await bus.relay().drain()
    outages = 2

    async def handler(conn, event):
        nonlocal outages
        if outages:
            outages -= 1
            raise ConnectionResetError("database connection lost")
        await bus.handler(conn, event)

    consumer = bus.consumer(handler=handler, max_attempts=1, retry_backoff_s=0.01)
    await consumer.run_until_idle()
    assert sorted(await bus.effects()) == sorted(ids)
    assert consumer.stats["failures"] == 0 and consumer.stats["dead_lettered"] == 0


async def test_an_entry_that_keeps_killing_its_consumer_is_dead_lettered_without_running_again(bus):
    (eid,) = await bus.emit_n(1)
    await bus.relay().drain()
    await bus.redis.xgroup_create(bus.stream, "fx", id="0")
    ((sid, _),) = (await bus.redis.xreadgroup("fx", "doomed", {bus.stream: ">"}))[0][1]
    for _ in range(3):  # three more processes picked it up and died
        await bus.redis.xclaim(bus.stream, "fx", "doomed", 0, [sid])
    calls = []

    async def handler(conn, event):
        calls.append(event)

    consumer = bus.consumer(handler=handler, claim_idle_ms=0, max_deliveries=3)
    await consumer.run_until_idle()
    assert calls == [] and await bus.effects() == []
    (dead,) = await relay.dead_letters(bus.redis, bus.prefix)
    assert dead["event_id"] == str(eid) and "without an outcome" in dead["dead_error"]
    assert (await bus.redis.xpending(bus.stream, "fx"))["pending"] == 0


async def test_housekeeping_prunes_relayed_outbox_rows_past_their_retention_only(bus, pool):
    await bus.emit_n(5)
    r = bus.relay(outbox_retention_s=3600)
    await r.drain()
    await bus.emit_n(2)  # not relayed: kept however old
    await pool.execute("UPDATE outbox SET relayed_at = now() - interval '2 hours' WHERE id IN (SELECT id FROM outbox WHERE relayed_at IS NOT NULL ORDER BY id LIMIT 3)")
    await pool.execute("UPDATE outbox SET created_at = now() - interval '2 hours'")
    await r.housekeeping()
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NOT NULL") == 2
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL") == 2


async def test_run_consumers_hosts_several_groups_in_one_process_until_stopped(bus):
    from core.consumer import run_consumers

    ids = await bus.emit_n(40)
    await bus.relay().drain()
    seen: list = []

    async def audit(conn, event):
        seen.append(event.event_id)

    a = bus.consumer(group="effects", block_ms=50)
    b = bus.consumer(group="audit", handler=audit, block_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumers([a, b], stop))
    while a.stats["processed"] < 40 or b.stats["processed"] < 40:
        assert not task.done()
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 30)
    assert sorted(await bus.effects()) == sorted(ids) and sorted(seen) == sorted(ids)


async def test_emit_many_through_a_session_and_a_follow_up_event_emitted_by_a_handler_commits_with_its_effect(bus, pool, sessions):
    from core.events import NewEvent, emit_many

    async with sessions() as session, session.begin():
        ids = await emit_many(session, [NewEvent("order.paid", {"seq": i}, "order", i) for i in range(3)])
    await bus.relay().drain()

    async def handler(conn, event):
        await bus.handler(conn, event)
        await emit(conn, type="loyalty.credited", payload={"for": event.event_id})

    await bus.consumer(handler=handler, types=["order.*"]).run_until_idle()
    follow_ups = await pool.fetch("SELECT payload->>'for' AS f FROM outbox WHERE type = 'loyalty.credited'")
    assert sorted(r["f"] for r in follow_ups) == sorted(str(i) for i in ids)
    assert sorted(await bus.effects()) == sorted(ids)


async def test_entries_redis_lost_after_they_were_relayed_are_re_relayed_and_applied_once(bus):
    first = await bus.emit_n(50)
    await bus.relay().drain()
    consumer = bus.consumer()
    await consumer.run_until_idle()
    second = await bus.emit_n(30)
    await bus.relay().drain()
    # Redis acknowledged the last batch, then lost it (restart without fsync, failover to a lagging replica).
    lost = [sid for sid, _ in await bus.redis.xrevrange(bus.stream, count=30)]
    await bus.redis.xdel(bus.stream, *lost)

    leader = bus.relay()
    assert await leader.recover_lost_entries() >= 30
    await consumer.run_until_idle()
    assert sorted(await bus.effects()) == sorted(first + second)
    assert await leader.recover_lost_entries() == 0  # the stream is whole again


async def test_a_wiped_redis_is_refilled_from_the_outbox_and_consumers_apply_nothing_twice(bus):
    ids = await bus.emit_n(20)
    await bus.relay().drain()
    consumer = bus.consumer()
    await consumer.run_until_idle()
    await bus.redis.delete(bus.stream)  # stream and consumer groups gone
    await bus.relay().housekeeping()
    assert await bus.redis.xlen(bus.stream) == 20
    await consumer.run_until_idle()  # recreates its group from the start
    assert sorted(await bus.effects()) == sorted(ids)
    assert consumer.stats["duplicates"] == 20


async def test_normal_relaying_and_requeued_dead_letters_raise_no_false_alarm(bus):
    ids = await bus.emit_n(10)
    r = bus.relay(batch_size=3)
    await r.drain()
    assert await r.recover_lost_entries() == 0

    async def handler(conn, event):
        if event.event_id == ids[0]:
            raise ValueError("bug")

    await bus.consumer(handler=handler, max_attempts=1).run_until_idle()
    await relay.requeue_dead_letters(bus.redis, bus.prefix)  # newest entry is now an old event
    assert await r.recover_lost_entries() == 0
    assert await bus.relay().recover_lost_entries() == 0


async def test_many_requeued_dead_letters_on_top_of_the_stream_raise_no_false_alarm(bus):
    ids = await bus.emit_n(150)
    await bus.relay().drain()

    async def handler(conn, event):
        raise ValueError("bug")

    await bus.consumer(handler=handler, max_attempts=1).run_until_idle()
    assert await relay.requeue_dead_letters(bus.redis, bus.prefix) == len(ids)
    assert await bus.relay().recover_lost_entries() == 0


def test_serena_events_replay_resends_from_the_outbox(settings, monkeypatch):
    from typer.testing import CliRunner

    from serena.commands.events import app

    monkeypatch.setenv("SERENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SERENA_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("SERENA_REDIS_PREFIX", settings.redis_prefix + "cli:")
    result = CliRunner().invoke(app, ["replay", "--since", "2999-01-01T00:00:00"])
    assert result.exit_code == 0, result.output
    assert "re-sent 0 events" in result.output
