"""Throughput of the event bus on this machine (not a test): emit, relay, consume.

    .venv/bin/python -m tests.core.events_bench [--events 50000]

Builds a throw-away database migrated to head, then measures: single-event emit
transactions, relay drain (batches of 500), consumer drain (batches of --consumer-batch, one insert per
event as the effect). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import asyncpg
import psycopg2
import redis.asyncio as aioredis

from core import migrate
from core.consumer import Consumer
from core.events import NewEvent, emit, emit_many
from core.relay import Relay

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN)
    conn.autocommit = True
    conn.cursor().execute(sql)
    conn.close()


async def bench(n: int, dsn: str, consumer_batch: int) -> dict:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
    redis = aioredis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    await pool.execute("CREATE TABLE fx (event_id uuid NOT NULL)")
    out: dict = {"events": n, "consumer_batch": consumer_batch}
    try:
        t = time.perf_counter()
        for i in range(1000):
            async with pool.acquire() as conn, conn.transaction():
                await emit(conn, type="bench.single", payload={"i": i})
        out["emit_single_tx_per_s"] = round(1000 / (time.perf_counter() - t))
        t = time.perf_counter()
        for start in range(0, n - 1000, 1000):
            async with pool.acquire() as conn, conn.transaction():
                await emit_many(conn, [NewEvent("bench.bulk", {"i": i, "note": "x" * 100}) for i in range(start, start + 1000)])
        out["emit_many_per_s"] = round((n - 1000) / (time.perf_counter() - t))

        t = time.perf_counter()
        sent = await Relay(pool=pool, redis=redis, prefix=prefix, batch_size=500).drain()
        out["relay_per_s"] = round(sent / (time.perf_counter() - t))

        async def handler(conn, event) -> None:
            await conn.execute("INSERT INTO fx VALUES ($1)", event.event_id)

        consumer = Consumer(group="bench", handler=handler, db=pool, redis=redis, prefix=prefix, batch_size=consumer_batch)
        t = time.perf_counter()
        await consumer.run_until_idle()
        out["consume_per_s"] = round(consumer.stats["processed"] / (time.perf_counter() - t))
        assert consumer.stats["processed"] == sent == n
    finally:
        async for key in redis.scan_iter(match=prefix + "*"):
            await redis.delete(key)
        await redis.aclose()
        await pool.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--consumer-batch", type=int, default=100)
    args = parser.parse_args()
    name = f"serena_events_bench_{uuid.uuid4().hex[:6]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        dsn = ADMIN.rsplit("/", 1)[0] + "/" + name
        migrate.upgrade(dsn)
        print(json.dumps(asyncio.run(bench(args.events, dsn, args.consumer_batch))))
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
