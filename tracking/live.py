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

from core import fleetstate

from tracking import history

# ARGV[1] is ONE JSON array of [driver, ts, fix-json] rows: one argument instead of three per
# fix, because redis-py encodes every argument in Python (it was the largest cost of a batch).
_UPDATE = """
local rows = cjson.decode(ARGV[1])
local updated = {}
for i = 1, #rows do
    local d, ts, js = tostring(rows[i][1]), rows[i][2], rows[i][3]
    local cur = redis.call('HGET', KEYS[2], d)
    if (not cur) or tonumber(cur) < ts then
        redis.call('HSET', KEYS[2], d, string.format('%.17g', ts))
        redis.call('HSET', KEYS[1], d, js)
        updated[#updated + 1] = d
    end
end
return {redis.call('EXISTS', KEYS[3]), updated}
"""

# PUBLISH many (channel, message) pairs in one round trip and one command: a pipeline of
# thousands of PUBLISH commands costs more in redis-py's command packing than in Redis.
# ARGV[1] is a JSON array of [channel, byte length], ARGV[2] the messages end to end: the
# messages (JSON themselves) are not escaped into a JSON string and unescaped again.
_PUBLISH_MANY = """
local heads = cjson.decode(ARGV[1])
local body = ARGV[2]
local pos = 1
for i = 1, #heads do
    local n = heads[i][2]
    redis.call('PUBLISH', heads[i][1], string.sub(body, pos, pos + n - 1))
    pos = pos + n
end
return #heads
"""

# HMGET with the field list as ONE JSON argument (same reason as above); chunked below Lua's unpack limit.
_HMGET = """
local ids = cjson.decode(ARGV[1])
return redis.call('HMGET', KEYS[1], unpack(ids))
"""
_HMGET_CHUNK = 4000

REBUILD_DAYS = 2  # how far back a rebuild looks for a driver's newest stored fix


class Keys:
    """Redis key names for one deployment prefix."""

    def __init__(self, prefix: str) -> None:
        # The two keys dispatch reads are the kernel's contract (core.fleetstate).
        self.live = fleetstate.live_key(prefix)
        self.live_ts = fleetstate.live_ts_key(prefix)
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
        self._hmget = redis.register_script(_HMGET)

    async def hmget(self, key: str, fields: Sequence[int | str]) -> list[bytes | None]:
        """HMGET of many fields in one script call per 4,000 (redis-py packs each field in Python otherwise)."""
        out: list[bytes | None] = []
        for i in range(0, len(fields), _HMGET_CHUNK):
            chunk = [str(f) for f in fields[i : i + _HMGET_CHUNK]]
            out += await self._hmget(keys=[key], args=[orjson.dumps(chunk)])
        return out

    async def publish_many(self, pairs: list[tuple[str, bytes]]) -> None:
        """Publish every (channel, message) pair with one script call."""
        if pairs:
            msgs = [m if type(m) is bytes else (m.encode() if isinstance(m, str) else bytes(m)) for _, m in pairs]
            heads = orjson.dumps([(ch, len(m)) for (ch, _), m in zip(pairs, msgs, strict=True)])
            await self._publish(keys=[], args=[heads, b"".join(msgs)])

    async def update(self, rows: Iterable[dict[str, Any]]) -> tuple[bool, list[int]]:
        """Write newer-only; returns (epoch marker present, driver ids whose live fix changed)."""
        packed = [(r["driver_id"], float(r["ts"]), orjson.dumps(r).decode()) for r in rows]
        if not packed:
            return bool(await self.redis.exists(self.keys.epoch)), []
        present, updated = await self._script(keys=[self.keys.live, self.keys.live_ts, self.keys.epoch],
                                              args=[orjson.dumps(packed)])
        return bool(present), [int(d) for d in updated]

    async def get(self, driver_ids: Sequence[int]) -> dict[int, dict]:
        """Live fixes of some drivers (missing ones are left out)."""
        if not driver_ids:
            return {}
        values = await self.hmget(self.keys.live, driver_ids)
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
