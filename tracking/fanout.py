"""Fan-out of driver updates to WebSocket watchers through Redis pub/sub, shared by one API process.

Any API replica can serve any watcher: the ingest replicas publish each driver's update on
`{prefix}tracking:driver:{id}`; each API process keeps ONE pub/sub connection, subscribes a
driver's channel while at least one local watcher needs it (reference-counted) and hands
each message to the watchers' inboxes. A slow watcher's inbox is bounded: when it is full
the oldest update is dropped for that watcher only (a newer position supersedes it; counted
in `serena_tracking_watcher_drops_total`), so one stalled phone cannot hold back the others
or grow memory.

The pub/sub connection is our own asyncio protocol over `hiredis.Reader`, not redis-py's
`PubSub`: at 5,000 driver updates a second redis-py's per-message path (`listen` →
`parse_response` → `handle_message`, ~100 µs a message under load) was 60 % of the API
process's CPU, and a reader that fell behind got disconnected by Redis's pub/sub output
buffer limit. Here a message costs one `Reader.gets()` and one dict lookup, and it is handed
to the watchers in the same callback (no task hop). SUBSCRIBE / UNSUBSCRIBE are written
straight to the socket, so watch/unwatch need no lock. If the connection drops, it
reconnects with back-off, resubscribes every watched driver and asks every watcher for a
fresh snapshot (it may have missed updates meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
from collections.abc import Callable

import hiredis
import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter

from tracking import gctune, live

log = logging.getLogger("serena.tracking.fanout")
QUEUE_MAX = 32  # updates buffered per watcher before the oldest is dropped
SNAPSHOT = None  # the inbox item that asks a watcher's sender for a fresh snapshot (heartbeat, reconnect)
RECONNECT_MAX_S = 5.0

MANY_WATCHERS = 1_000  # from this many watchers on, the process gets tracking.gctune's thresholds

DROPS = Counter("serena_tracking_watcher_drops_total", "Driver updates dropped for a slow customer socket (a newer one superseded it)")


class Inbox:
    """One watcher's bounded FIFO of updates with a single waiting consumer (cheaper than asyncio.Queue).

    Items are the parsed update dicts, shared by every watcher of the driver (add only derived
    `_` keys), or SNAPSHOT.
    """

    __slots__ = ("items", "_waiter")

    def __init__(self, maxlen: int = QUEUE_MAX) -> None:
        self.items: collections.deque = collections.deque(maxlen=maxlen)
        self._waiter: asyncio.Future | None = None

    def put(self, item) -> None:
        items = self.items
        if len(items) == items.maxlen:
            DROPS.inc()  # deque(maxlen) drops the oldest on append
        items.append(item)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def get(self):
        """The oldest item, waiting for one if empty (one consumer at a time)."""
        while not self.items:
            try:
                await self.wait()
            finally:
                self._waiter = None
        return self.items.popleft()

    def wait(self) -> asyncio.Future:
        """A future done when an item is put (await it when `items` is empty; one consumer at a time).

        For a consumer loop that pops `items` itself: awaiting this future directly does not
        create a coroutine per wait, which with thousands of watchers each waiting about a
        second for its next update were thousands of objects in every young GC generation.
        """
        self._waiter = w = asyncio.get_running_loop().create_future()
        return w

    def __len__(self) -> int:
        return len(self.items)


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class _PubSubProtocol(asyncio.Protocol):
    """RESP2 pub/sub reader: calls `on_message(channel, data)` for each message, in the read callback."""

    def __init__(self, on_message: Callable[[bytes, bytes], None]) -> None:
        self.on_message = on_message
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()  # AUTH answered (or not needed)
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.expect_auth = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        if not self.expect_auth:
            self.ready.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"Redis closed the pub/sub connection: {exc}"))
        if not self.lost.done():
            self.lost.set_result(exc)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        on_message = self.on_message
        while True:
            msg = reader.gets()
            if msg is False:
                return
            if type(msg) is list:
                if len(msg) == 3 and msg[0] == b"message":
                    try:
                        on_message(msg[1], msg[2])
                    except Exception:  # noqa: BLE001 - one bad message must not stop the fan-out
                        log.exception("fan-out could not deliver a message on %r", msg[1])
                # subscribe / unsubscribe confirmations: nothing to do
            elif isinstance(msg, hiredis.ReplyError):
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"Redis refused the pub/sub connection: {msg}"))
                else:
                    log.warning("Redis pub/sub error: %s", msg)
            elif not self.ready.done():  # +OK to AUTH
                self.ready.set_result(None)


class Fanout:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = live.Keys(prefix)
        self._prefix = self.keys.driver_prefix.encode()
        self._plen = len(self._prefix)
        self.watchers: dict[int, set[Inbox]] = {}
        self._proto: _PubSubProtocol | None = None
        self.task: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._count = 0  # watchers
        self.client_name = f"serena-fanout-{os.getpid()}-{id(self):x}"

    # --- the connection -------------------------------------------------------------------------

    async def _connect(self) -> _PubSubProtocol:
        pool = self.redis.connection_pool
        kw = pool.connection_kwargs
        loop = asyncio.get_running_loop()
        proto = _PubSubProtocol(self._dispatch)
        password, username = kw.get("password"), kw.get("username")
        proto.expect_auth = bool(password)
        if kw.get("path"):
            await loop.create_unix_connection(lambda: proto, kw["path"])
        else:
            ctx = None
            if "SSL" in pool.connection_class.__name__:
                ctx = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
                if kw.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
            await loop.create_connection(lambda: proto, kw.get("host", "localhost"), kw.get("port", 6379), ssl=ctx)
        if password:
            auth = [b"AUTH", *([username.encode()] if username else []), password.encode()]
            proto.transport.write(_command(*auth))
        await asyncio.wait_for(proto.ready, 10)
        # A name in CLIENT LIST: operators (and tests) can tell the fan-out connection from the others.
        proto.transport.write(_command(b"CLIENT", b"SETNAME", self.client_name.encode()))
        if self.watchers:
            proto.transport.write(_command(b"SUBSCRIBE", *(self._channel(d) for d in self.watchers)))
        return proto

    async def _run(self) -> None:
        """Keep the connection up; after a reconnect every watcher gets a snapshot (it may have missed updates)."""
        delay = 0.2
        first = True
        while True:
            try:
                self._proto = await self._connect()
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.warning("fan-out cannot reach Redis (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = 0.2
            self._connected.set()
            if not first:
                for inboxes in self.watchers.values():
                    for box in inboxes:
                        box.put(SNAPSHOT)
            first = False
            exc = await self._proto.lost
            self._connected.clear()
            self._proto = None
            log.warning("fan-out lost Redis (%s); resubscribing", exc)

    async def _ensure(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        if not self._connected.is_set():
            # Wait for the first connection so a watcher's first updates are not missed; if Redis
            # is down the watcher still gets its snapshot and is subscribed on reconnect.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), 5)

    def _channel(self, driver_id: int) -> bytes:
        return self._prefix + str(driver_id).encode()

    def _send(self, *parts: bytes) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.write(_command(*parts))
        # else: the reconnect subscribes from self.watchers

    # --- delivery ---------------------------------------------------------------------------------

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if not channel.startswith(self._prefix):
            return
        inboxes = self.watchers.get(int(channel[self._plen:]))
        if not inboxes:
            return
        update = orjson.loads(data)  # once per message, not once per watcher
        for box in inboxes:
            box.put(update)

    async def watch(self, driver_id: int) -> Inbox:
        """An inbox receiving the updates of `driver_id` (parsed dicts shared by all watchers: add only derived `_` keys)."""
        await self._ensure()
        box = Inbox()
        boxes = self.watchers.get(driver_id)
        if boxes is None:
            self.watchers[driver_id] = boxes = set()
            self._send(b"SUBSCRIBE", self._channel(driver_id))
        boxes.add(box)
        self._count += 1
        if self._count == MANY_WATCHERS:
            gctune.for_large_live_heap()
        return box

    async def unwatch(self, driver_id: int, box: Inbox) -> None:
        boxes = self.watchers.get(driver_id)
        if boxes is None:
            return
        if box in boxes:
            boxes.discard(box)
            self._count -= 1
        if not boxes:
            del self.watchers[driver_id]
            self._send(b"UNSUBSCRIBE", self._channel(driver_id))

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
