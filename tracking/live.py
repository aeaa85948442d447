"""Live state in Redis: each driver's newest fix (position, matched edge, speed, heading, last seen).

Keys (under settings.redis_prefix):

    tracking:live        hash  driver_id -> JSON of the newest fix (tracking.validate.Fix.to_live)
    tracking:live:ts     hash  driver_id -> its event time (epoch s), for the newer-only rule
    tracking:live:epoch  string, present while the live hashes are complete (see below)
    tracking:fleet       pub/sub channel: one JSON array of fixes per ingest batch (fleet board feed)
    tracking:driver:{id} pub/sub channel: a driver's position + ETA updates (customer tracking)

Updates go through one Lua script per batch that writes a fix only if it is newer (event
time) than the stored one, so replicas that process a driver's fixes out of order (a shared
subscription spreads one driver's messages across replicas) cannot move the live position
backwards. Redis is not the system of record: history in PostGIS is. If Redis restarts
empty, the `epoch` marker is gone; the next batch notices (the script reports it) and
`rebuild` refills the hashes from the newest stored fix of every driver, newer-only, so it
cannot clobber a fix written since the restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from tracking import history

_UPDATE = """
local n = #ARGV / 3
local updated = {}
for i = 0, n - 1 do
    local d, ts, js = ARGV[i * 3 + 1], ARGV[i * 3 + 2], ARGV[i * 3 + 3]
    local cur = redis.call('HGET', KEYS[2], d)
    if (not cur) or tonumber(cur) < tonumber(ts) then
        redis.call('HSET', KEYS[2], d, ts)
        redis.call('HSET', KEYS[1], d, js)
        updated[#updated + 1] = d
    end
end
return {redis.call('EXISTS', KEYS[3]), updated}
"""

# PUBLISH many (channel, message) pairs in one round trip and one command: a pipeline of
# thousands of PUBLISH commands costs more in redis-py's command packing than in Redis.
_PUBLISH_MANY = """
for i = 1, #ARGV, 2 do
    redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""

REBUILD_DAYS = 2  # how far back a rebuild looks for a driver's newest stored fix


class Keys:
    """Redis key names for one deployment prefix."""

    def __init__(self, prefix: str) -> None:
        self.live = prefix + "tracking:live"
        self.live_ts = prefix + "tracking:live:ts"
        self.epoch = prefix + "tracking:live:epoch"
        self.fleet = prefix + "tracking:fleet"
        self.driver_prefix = prefix + "tracking:driver:"
        self.rebuild_lock = prefix + "tracking:live:rebuild"

    def driver(self, driver_id: int) -> str:
        return f"{self.driver_prefix}{driver_id}"


class LiveState:
    """Reads and writes the live hashes for one Redis client and prefix."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._script = redis.register_script(_UPDATE)
        self._publish = redis.register_script(_PUBLISH_MANY)

    async def publish_many(self, pairs: list[tuple[str, bytes]]) -> None:
        """Publish every (channel, message) pair with one script call."""
        if pairs:
            await self._publish(keys=[], args=[x for pair in pairs for x in pair])

    async def update(self, rows: Iterable[dict[str, Any]]) -> tuple[bool, list[int]]:
        """Write newer-only; returns (epoch marker present, driver ids whose live fix changed)."""
        argv: list[Any] = []
        for r in rows:
            argv += [r["driver_id"], repr(float(r["ts"])), orjson.dumps(r)]
        if not argv:
            return bool(await self.redis.exists(self.keys.epoch)), []
        present, updated = await self._script(keys=[self.keys.live, self.keys.live_ts, self.keys.epoch], args=argv)
        return bool(present), [int(d) for d in updated]

    async def get(self, driver_ids: Sequence[int]) -> dict[int, dict]:
        """Live fixes of some drivers (missing ones are left out)."""
        if not driver_ids:
            return {}
        values = await self.redis.hmget(self.keys.live, [str(d) for d in driver_ids])
        return {d: orjson.loads(v) for d, v in zip(driver_ids, values, strict=True) if v is not None}

    async def all(self) -> list[dict]:
        """The newest fix of every driver: the fleet board's "latest position of every driver" query."""
        values = await self.redis.hvals(self.keys.live)
        return [orjson.loads(v) for v in values]

    async def rebuild(self, pool: asyncpg.Pool | asyncpg.Connection) -> int:
        """Refill the live hashes from history (newer-only) and set the epoch marker; returns drivers loaded.

        A short lock keeps replicas from all rebuilding at once after a restart; a replica that
        does not get it simply carries on (its own updates are newer-only anyway).
        """
        if not await self.redis.set(self.keys.rebuild_lock, "1", nx=True, ex=30):
            return 0
        try:
            rows = await history.latest_positions(pool, since_days=REBUILD_DAYS)
            for i in range(0, len(rows), 1000):
                await self.update(rows[i : i + 1000])
            await self.redis.set(self.keys.epoch, repr(time.time()))
            return len(rows)
        finally:
            await self.redis.delete(self.keys.rebuild_lock)

    async def ensure(self, pool: asyncpg.Pool | asyncpg.Connection) -> int:
        """Rebuild if the epoch marker is missing (first start, or Redis lost its data)."""
        if await self.redis.exists(self.keys.epoch):
            return 0
        return await self.rebuild(pool)


async def latest_positions(*, redis: aioredis.Redis, prefix: str, pool: asyncpg.Pool | None = None) -> list[dict]:
    """Latest position of every driver: Redis first, PostGIS history when Redis has nothing (e.g. just restarted)."""
    live = LiveState(redis, prefix)
    try:
        rows = await live.all()
        if rows or pool is None:
            return rows
    except (ConnectionError, OSError, aioredis.RedisError):
        if pool is None:
            raise
    return await history.latest_positions(pool, since_days=REBUILD_DAYS)
