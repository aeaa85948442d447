"""ETA and customer push (placeholder; filled in below)."""

from __future__ import annotations

import orjson

from core.settings import Settings
from tracking import live


def stages(*, settings: Settings, redis) -> list:
    return []


def make_push(settings: Settings):
    keys = live.Keys(settings.redis_prefix)

    async def push(fixes, redis) -> None:
        pipe = redis.pipeline(transaction=False)
        for f in fixes:
            pipe.publish(keys.driver(f.driver_id), orjson.dumps({"type": "position", **f.to_live()}))
        await pipe.execute()

    return push
