"""Pruning processed_events: old idempotency records go, and nothing that can still be re-delivered loses its record.

Real PostgreSQL and Redis. "Old" is made by moving `processed_at` (and the outbox rows'
`created_at`) back in time; the relay's own outbox pruning is played by deleting the rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core import events
from core.consumer import prune_processed
from tests.core.events_support import bus  # noqa: F401 - fixture

DAY_S = 86400.0


async def _rows(pool, group: str = "fx") -> set:
    return {r[0] for r in await pool.fetch("SELECT event_id FROM processed_events WHERE consumer = $1", group)}


async def _age(pool, ids, *, days: float) -> None:
    await pool.execute("UPDATE processed_events SET processed_at = now() - make_interval(days => $2) WHERE event_id = ANY($1)",
                       ids, days)


async def _copy_entry(bus, event_id) -> dict:
    """The stream fields of `event_id`'s entry, to XADD again (what a relay re-send writes)."""
    for _sid, fields in await bus.redis.xrange(bus.stream):
        if fields["event_id"] == str(event_id):
            return fields
    raise AssertionError(f"{event_id} not in the stream")


async def test_old_records_are_pruned_recent_ones_stay_and_redelivered_events_are_still_skipped(bus, pool):
    ids = await bus.emit_n(8)
    await bus.relay().drain()
    consumer = bus.consumer()
    await consumer.run_until_idle()
    assert await _rows(pool) == set(ids) and len(await bus.effects()) == 8
    old, recent = ids[:6], ids[6:]
    await _age(pool, old, days=20)

    # While the outbox still holds an event from 30 days ago (relayed-row retention switched
    # off, say), it can be replayed: nothing processed after it is pruned, however old.
    await pool.execute("UPDATE outbox SET created_at = now() - interval '30 days' WHERE event_id = $1", old[0])
    await pool.execute("DELETE FROM outbox WHERE event_id = ANY($1)", old[1:])
    assert await prune_processed(pool, bus.redis, bus.prefix, retention_s=14 * DAY_S) == {}
    assert await _rows(pool) == set(ids)
    await pool.execute("DELETE FROM outbox WHERE event_id = $1", old[0])  # the relay prunes it at last

    # Still reachable from Redis, so kept whatever their age:
    # old[1] re-sent and delivered to a consumer that died before acknowledging it (pending),
    await bus.redis.xadd(bus.stream, await _copy_entry(bus, old[1]))
    got = await bus.redis.xreadgroup("fx", "stuck", {bus.stream: ">"}, count=1)
    assert got and got[0][1][0][1]["event_id"] == str(old[1])
    # old[2] in the dead letters (a requeue sends it to every group again),
    await bus.redis.xadd(events.dead_letter_key(bus.prefix), {**await _copy_entry(bus, old[2]), "dead_group": "other"})
    # old[3] re-sent and not read by the group yet.
    await bus.redis.xadd(bus.stream, await _copy_entry(bus, old[3]))
    # A group Redis does not know (its stream was wiped): its position is unknown, nothing of it goes.
    await pool.execute("INSERT INTO processed_events (consumer, event_id, processed_at) "
                       "VALUES ('fx-gone', $1, now() - interval '400 days')", old[4])

    deleted = await prune_processed(pool, bus.redis, bus.prefix, retention_s=14 * DAY_S)
    assert deleted == {"fx": 3}  # old[0], old[4], old[5]: acknowledged, not dead, not in the outbox, 20 days old
    assert await _rows(pool) == {old[1], old[2], old[3], *recent}
    assert await _rows(pool, "fx-gone") == {old[4]}
    assert await prune_processed(pool, bus.redis, bus.prefix, retention_s=14 * DAY_S) == {}  # nothing left to do

    # Re-deliveries: the pending and the unread copies, and a replay of the recent events from
    # the outbox. Each is recognised as applied; the effect table keeps its 8 rows.
    await bus.relay().replay(since=datetime.now(UTC) - timedelta(hours=1))
    again = bus.consumer(name="c2", claim_idle_ms=0)
    await again.run_until_idle()
    assert again.stats["processed"] == 0 and again.stats["duplicates"] == 4  # old[1], old[3], recent x2
    effects = await bus.effects()
    assert len(effects) == 8 and set(effects) == set(ids)

    # Once acknowledged, the re-sent copies protect nothing any more: old[1] and old[3] go. The
    # recent two, made 2 days old with their outbox rows, stay while those rows exist (a
    # 1-day retention notwithstanding), and go when the relay prunes the rows.
    await _age(pool, recent, days=2)
    await pool.execute("UPDATE outbox SET created_at = now() - interval '2 days'")
    assert await prune_processed(pool, bus.redis, bus.prefix, retention_s=1 * DAY_S) == {"fx": 2}
    assert await _rows(pool) == {old[2], *recent}
    await pool.execute("DELETE FROM outbox")
    assert await prune_processed(pool, bus.redis, bus.prefix, retention_s=1 * DAY_S) == {"fx": 2}
    assert await _rows(pool) == {old[2]}  # the dead letter's


async def test_pruning_deletes_in_chunks_and_leaves_other_groups_alone(bus, pool):
    ids = await bus.emit_n(25)
    await bus.relay().drain()
    await bus.consumer().run_until_idle()
    await bus.consumer(group="fx-other", name="o1").run_until_idle()
    await pool.execute("DELETE FROM outbox")
    await pool.execute("UPDATE processed_events SET processed_at = now() - interval '15 days' WHERE consumer = 'fx'")
    await pool.execute("UPDATE processed_events SET processed_at = now() - interval '13 days' WHERE consumer = 'fx-other'")
    assert await prune_processed(pool, bus.redis, bus.prefix, retention_s=14 * DAY_S, chunk=7) == {"fx": 25}
    assert await _rows(pool) == set()
    assert await _rows(pool, "fx-other") == set(ids)


async def test_the_workers_periodic_job_prunes_once_per_interval(bus, pool, settings):
    from serena import periodic

    ids = await bus.emit_n(3)
    await bus.relay().drain()
    await bus.consumer().run_until_idle()
    await pool.execute("DELETE FROM outbox")
    await _age(pool, ids, days=15)
    job_settings = settings.model_copy(update={"redis_prefix": bus.prefix, "events_processed_retention_s": 14 * 86400,
                                               "events_prune_interval_s": 3600})
    assert await periodic.prune_processed_events(job_settings) == {"fx": 3}
    assert await periodic.prune_processed_events(job_settings) is None  # this interval's run is done (by any worker)
    await bus.redis.delete(periodic.run_key(bus.prefix, "prune-processed-events"))
