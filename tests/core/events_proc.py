"""A relay or a consumer as an OS process of its own, for the crash tests (kill -9, restart).

    python -m tests.core.events_proc relay   --prefix P --name N [--batch B] [--hang-after K] [--lease-ttl-s T]
    python -m tests.core.events_proc consume --prefix P --name N --group G --table T [--hang-after K]

Database and Redis come from SERENA_DATABASE_URL / SERENA_REDIS_URL. `--hang-after K`
makes the process stop dead at the worst moment once it has handled K events (a relay:
batch XADDed, not yet marked relayed; a consumer: batch committed, not yet acknowledged)
and set the Redis key `<prefix>proc:<name>:hung`, so a test kills it -9 exactly there
instead of guessing with timing. SIGTERM stops gracefully; on exit the process prints its
counts as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import asyncpg
import redis.asyncio as aioredis

from core.consumer import Consumer
from core.relay import Relay


class HangingRelay(Relay):
    """Hangs, holding its row locks, after XADDing the batch that takes it past `hang_after` rows."""

    def __init__(self, *, hang_after: int, marker: str, **kw) -> None:
        super().__init__(**kw)
        self.hang_after = hang_after
        self.marker = marker

    async def _after_xadd(self, rows) -> None:
        if self.hang_after and self.relayed + len(rows) > self.hang_after:
            await self.redis.set(self.marker, len(rows))
            await asyncio.Event().wait()  # until killed


class HangingConsumer(Consumer):
    """Hangs after committing the batch that takes it to `hang_after` applied events, before its XACK."""

    def __init__(self, *, hang_after: int, marker: str, **kw) -> None:
        super().__init__(**kw)
        self.hang_after = hang_after
        self.marker = marker

    async def _ack(self, ids) -> None:
        if self.hang_after and self.stats["processed"] >= self.hang_after:
            await self.redis.set(self.marker, len(ids))
            await asyncio.Event().wait()  # until killed
        await super()._ack(ids)


async def main(args: argparse.Namespace) -> None:
    dsn = os.environ["SERENA_DATABASE_URL"]
    redis = aioredis.from_url(os.environ.get("SERENA_REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    marker = f"{args.prefix}proc:{args.name}:hung"
    try:
        if args.role == "relay":
            relay = HangingRelay(
                pool=pool, redis=redis, prefix=args.prefix, batch_size=args.batch, name=args.name,
                hang_after=args.hang_after, marker=marker, poll_interval_s=0.2, lease_ttl_s=args.lease_ttl_s,
            )
            await redis.set(f"{args.prefix}proc:{args.name}:started", 1)
            await relay.run(stop)
            print(json.dumps({"relayed": relay.relayed}), flush=True)
        else:
            table = args.table

            async def handler(conn, event) -> None:
                # No unique constraint on purpose: a double effect shows up as a second row.
                await conn.execute(f"INSERT INTO {table} (event_id, seq) VALUES ($1, $2)", event.event_id, event.payload["seq"])

            consumer = HangingConsumer(
                group=args.group, handler=handler, db=pool, redis=redis, prefix=args.prefix, name=args.name,
                batch_size=args.batch, claim_idle_ms=args.claim_idle_ms, claim_interval_s=0.5, block_ms=200,
                hang_after=args.hang_after, marker=marker,
            )
            await consumer.ensure_group()
            await redis.set(f"{args.prefix}proc:{args.name}:started", 1)
            await consumer.run(stop)
            print(json.dumps(consumer.stats), flush=True)
    finally:
        await redis.aclose()
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "consume"])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--name", default="p")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--group", default="g")
    parser.add_argument("--table", default="")
    parser.add_argument("--claim-idle-ms", type=int, default=1000)
    parser.add_argument("--hang-after", type=int, default=0)
    parser.add_argument("--lease-ttl-s", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
