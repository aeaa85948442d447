"""Shared fixture of the event-bus tests: a clean outbox, a stream prefix and an effect table per test."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest_asyncio
import redis.asyncio as aioredis

from core import events
from core.consumer import Consumer
from core.events import Event, NewEvent, emit_many
from core.relay import Relay


@pytest_asyncio.fixture(loop_scope="session")
async def bus(pool, redis, settings):
    """A clean outbox, a stream prefix of this test's own, and an effect table without a unique constraint."""
    await pool.execute("TRUNCATE outbox, processed_events")
    prefix = f"{settings.redis_prefix}{uuid.uuid4().hex[:8]}:"
    table = f"fx_{uuid.uuid4().hex[:10]}"
    # No unique constraint on purpose: a double effect shows up as a second row.
    await pool.execute(f"CREATE TABLE {table} (event_id uuid NOT NULL, seq int)")
    client = aioredis.from_url(settings.redis_url, decode_responses=True)

    async def handler(conn, event: Event) -> None:
        await conn.execute(f"INSERT INTO {table} (event_id, seq) VALUES ($1, $2)", event.event_id, event.payload.get("seq"))

    def relay(**kw) -> Relay:
        return Relay(pool=pool, redis=client, prefix=prefix, **kw)

    def consumer(**kw) -> Consumer:
        kw.setdefault("group", "fx")
        kw.setdefault("handler", handler)
        kw.setdefault("name", "c1")
        return Consumer(db=pool, redis=client, prefix=prefix, **kw)

    async def effects() -> list[uuid.UUID]:
        return [r[0] for r in await pool.fetch(f"SELECT event_id FROM {table}")]

    async def emit_n(n: int, type_: str = "test.happened", chunk: int = 1000) -> list[uuid.UUID]:
        ids: list[uuid.UUID] = []
        for start in range(0, n, chunk):
            async with pool.acquire() as conn, conn.transaction():
                ids += await emit_many(conn, [NewEvent(type_, {"seq": i}, "test", str(i)) for i in range(start, min(n, start + chunk))])
        return ids

    yield SimpleNamespace(
        prefix=prefix, stream=events.stream_key(prefix), table=table, redis=client, pool=pool,
        handler=handler, relay=relay, consumer=consumer, effects=effects, emit_n=emit_n,
    )
    await client.aclose()
    await pool.execute(f"DROP TABLE {table}")
