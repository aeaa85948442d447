"""A relay or a consumer as an OS process of its own, for the crash tests (kill -9, restart).

    python -m tests.core.events_proc relay   --prefix P [--batch N] [--pause-after-xadd-ms M]
    python -m tests.core.events_proc consume --prefix P --group G --name N --table T [--pause-before-ack-ms M]

Database and Redis come from SERENA_DATABASE_URL / SERENA_REDIS_URL. The pause options
widen the window a crash test aims its kill at, and the process sets the Redis key
`<prefix>proc:<name>:paused` while it sits in that window, so the test kills at the worst
moment deterministically instead of by timing. SIGTERM stops gracefully; on exit a
consumer prints its stats as one JSON line.
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


class PausingRelay(Relay):
    def __init__(self, *, pause_s: float, marker: str, **kw) -> None:
        super().__init__(**kw)
        self.pause_s = pause_s
        self.marker = marker

    async def _after_xadd(self, rows) -> None:
        if self.pause_s:
            await self.redis.set(self.marker, len(rows))
            await asyncio.sleep(self.pause_s)
            await self.redis.delete(self.marker)


class PausingConsumer(Consumer):
    def __init__(self, *, pause_s: float, marker: str, **kw) -> None:
        super().__init__(**kw)
        self.pause_s = pause_s
        self.marker = marker

    async def _ack(self, ids) -> None:
        if self.pause_s:
            await self.redis.set(self.marker, len(ids))
            await asyncio.sleep(self.pause_s)
            await self.redis.delete(self.marker)
        await super()._ack(ids)


async def main(args: argparse.Namespace) -> None:
    dsn = os.environ["SERENA_DATABASE_URL"]
    redis = aioredis.from_url(os.environ.get("SERENA_REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    marker = f"{args.prefix}proc:{args.name}:paused"
    try:
        if args.role == "relay":
            relay = PausingRelay(
                pool=pool, redis=redis, prefix=args.prefix, batch_size=args.batch, name=args.name,
                pause_s=args.pause_after_xadd_ms / 1000, marker=marker, poll_interval_s=0.2,
            )
            await redis.set(f"{args.prefix}proc:{args.name}:started", 1)
            await relay.run(stop)
            print(json.dumps({"relayed": relay.relayed}), flush=True)
        else:
            table = args.table

            async def handler(conn, event) -> None:
                # No unique constraint on purpose: a double effect shows up as a second row.
                await conn.execute(f"INSERT INTO {table} (event_id, seq) VALUES ($1, $2)", event.event_id, event.payload["seq"])

            consumer = PausingConsumer(
                group=args.group, handler=handler, db=pool, redis=redis, prefix=args.prefix, name=args.name,
                batch_size=args.batch, claim_idle_ms=args.claim_idle_ms, claim_interval_s=0.5, block_ms=200,
                pause_s=args.pause_before_ack_ms / 1000, marker=marker,
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
    parser.add_argument("--pause-after-xadd-ms", type=float, default=0)
    parser.add_argument("--pause-before-ack-ms", type=float, default=0)
    asyncio.run(main(parser.parse_args()))
