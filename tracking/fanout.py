"""Fan-out of driver updates to WebSocket watchers through Redis pub/sub, shared by one API process.

Any API replica can serve any watcher: the ingest replicas publish each driver's update on
`{prefix}tracking:driver:{id}`; each API process keeps ONE pub/sub connection, subscribes a
driver's channel while at least one local watcher needs it (reference-counted) and hands
each message to the watchers' queues. A slow watcher's queue is bounded: when it is full
the oldest update is dropped for that watcher only (a newer position supersedes it), so one
stalled phone cannot hold back the others or grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import orjson
import redis.asyncio as aioredis

from tracking import live

log = logging.getLogger("serena.tracking.fanout")
QUEUE_MAX = 32


class Fanout:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = live.Keys(prefix)
        self.watchers: dict[int, set[asyncio.Queue]] = defaultdict(set)
        self.pubsub = None
        self.task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        if self.pubsub is None:
            self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            await self.pubsub.subscribe(self.keys.fleet + ":noop")  # a pubsub needs one subscription before listen()
            self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        prefix = self.keys.driver_prefix
        while True:
            try:
                async for msg in self.pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    ch = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                    if not ch.startswith(prefix):
                        continue
                    queues = self.watchers.get(int(ch[len(prefix):]))
                    if not queues:
                        continue
                    data = orjson.loads(msg["data"])  # once per message, not once per watcher
                    for q in list(queues):
                        if q.full():
                            with contextlib.suppress(asyncio.QueueEmpty):
                                q.get_nowait()
                        q.put_nowait(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis restart: resubscribe everything
                log.warning("fan-out lost Redis (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    await self.pubsub.subscribe(*(self.keys.driver(d) for d in self.watchers), self.keys.fleet + ":noop")

    async def watch(self, driver_id: int) -> asyncio.Queue:
        """A queue receiving the updates (parsed dicts shared by all watchers: add only derived `_` keys) of `driver_id`."""
        q: asyncio.Queue = asyncio.Queue(QUEUE_MAX)
        async with self._lock:
            await self._ensure()
            if not self.watchers[driver_id]:
                await self.pubsub.subscribe(self.keys.driver(driver_id))
            self.watchers[driver_id].add(q)
        return q

    async def unwatch(self, driver_id: int, q: asyncio.Queue) -> None:
        async with self._lock:
            ws = self.watchers.get(driver_id)
            if ws is None:
                return
            ws.discard(q)
            if not ws:
                del self.watchers[driver_id]
                with contextlib.suppress(Exception):
                    await self.pubsub.unsubscribe(self.keys.driver(driver_id))

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
