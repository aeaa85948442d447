"""The shared Redis contract between tracking (writes live positions) and dispatch (writes driver plans).

Neither room may import the other, so the key layout both depend on lives here in the
kernel. Tracking owns the live-position writes (`tracking.live`); dispatch owns the plan
writes; each reads the other's through these functions.

    {prefix}tracking:live          hash  driver_id -> JSON {lat, lng, ts, ...} (latest accepted fix)
    {prefix}tracking:live:ts       hash  driver_id -> that fix's event time (epoch s): cheap change detection
    {prefix}tracking:plans         hash  driver_id -> JSON {"version": int, "stops": [stop, ...]}
    {prefix}tracking:order_driver  hash  order_id  -> driver_id
    {prefix}tracking:eta           hash  order_id  -> JSON {"earliest", "latest" (epoch s), "published_at", "driver_id"}
                                         (the ETA interval tracking last showed the customer)

    stop = {"stop_id": job id, "order_id": the commerce order, else the job id (what tracking links name), "lat", "lng", "service_s",
            "status": "pending" | "arrived" | "done" | "failed"}
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis.asyncio as aioredis


def live_key(prefix: str) -> str:
    return prefix + "tracking:live"


def live_ts_key(prefix: str) -> str:
    return prefix + "tracking:live:ts"


def eta_key(prefix: str) -> str:
    return prefix + "tracking:eta"


async def eta_intervals(redis: aioredis.Redis, *, prefix: str, order_ids: Sequence[str]) -> dict[str, dict]:
    """The live ETA interval tracking shows for each order that has one."""
    if not order_ids:
        return {}
    values = await redis.hmget(eta_key(prefix), list(order_ids))
    return {o: orjson.loads(v) for o, v in zip(order_ids, values, strict=True) if v is not None}


def plans_key(prefix: str) -> str:
    return prefix + "tracking:plans"


def order_driver_key(prefix: str) -> str:
    return prefix + "tracking:order_driver"


async def live_rows(redis: aioredis.Redis, *, prefix: str, driver_ids: Sequence[int]) -> dict[int, dict]:
    """The latest live row of each driver that has one."""
    if not driver_ids:
        return {}
    values = await redis.hmget(live_key(prefix), [str(d) for d in driver_ids])
    return {d: orjson.loads(v) for d, v in zip(driver_ids, values, strict=True) if v is not None}


async def write_plan(redis: aioredis.Redis, *, prefix: str, driver_id: int, stops: Sequence[dict], version: int = 0) -> None:
    """Replace a driver's remaining stops (in order) and the order → driver index, atomically."""
    pipe = redis.pipeline(transaction=True)
    pipe.hset(plans_key(prefix), str(driver_id), orjson.dumps({"version": version, "stops": list(stops)}))
    for s in stops:
        if s.get("order_id"):
            pipe.hset(order_driver_key(prefix), str(s["order_id"]), str(driver_id))
    await pipe.execute()


async def read_plan(redis: aioredis.Redis, *, prefix: str, driver_id: int) -> dict | None:
    raw = await redis.hget(plans_key(prefix), str(driver_id))
    return orjson.loads(raw) if raw else None
