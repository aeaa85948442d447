"""The outbox relay: moves committed outbox rows to the Redis Stream, one leader at a time.

A batch is: lock the oldest unrelayed rows (`FOR UPDATE SKIP LOCKED`), XADD them in one
script call, mark them relayed, commit. A crash after the XADDs and before the commit
re-sends that batch on restart: consumers are idempotent on the event id, so a re-send
costs a duplicate delivery, never a double effect, and at most one batch is re-sent per
crash. Rows are never skipped: there is no high-water mark, only `relayed_at IS NULL`, so
a transaction that commits late with a lower id is picked up by a later batch.

One relay leads (a lease in Redis); replicas stand by and take over when the lease
expires. The lease is an efficiency measure, not the safety net: two relays that both
believe they lead (a paused leader whose lease ran out) lock disjoint rows through SKIP
LOCKED, so they never send the same row concurrently. PostgreSQL wakes the relay with
NOTIFY (trigger `outbox_notify`, migration 0002); it also polls, because a notification
sent while no listener is connected is gone.

The leader also re-relays rows whose entries Redis lost (a restart without fsync, a
failover to a lagging replica), trims the stream (never past an entry some group has not
acknowledged) and prunes relayed outbox rows past their retention.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from core import events

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "serena_outbox"

_SELECT = """
    SELECT id, event_id, type, aggregate, aggregate_id, payload::text AS payload, created_at, now() AS relayed_at
    FROM outbox
    WHERE relayed_at IS NULL
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
"""
_MARK = "UPDATE outbox SET relayed_at = now() WHERE id = ANY($1::bigint[])"  # now(): the same value the SELECT read
_REPLAY = """
    SELECT id, event_id, type, aggregate, aggregate_id, payload::text AS payload, created_at, relayed_at
    FROM outbox
    WHERE relayed_at IS NOT NULL AND (relayed_at, id) > ($1, $2)
    ORDER BY relayed_at, id
    LIMIT $3
"""
_PRUNE = """
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox
        WHERE relayed_at IS NOT NULL AND relayed_at < now() - make_interval(secs => $1)
        ORDER BY id LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
"""

# Renew the lease only if we still hold it: a plain PEXPIRE would extend a lease another
# relay took over after ours expired.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# XADD a whole batch in one script call. A pipeline of XADDs spends most of its time in
# redis-py packing each command (measured: ~3,000 events/s under load, against ~10,000
# with this); the batch also lands atomically, all of it or none.
_XADD_BATCH = """
local n = 0
for _, r in ipairs(cjson.decode(ARGV[1])) do
    redis.call('XADD', KEYS[1], '*', 'event_id', r[1], 'type', r[2], 'aggregate', r[3],
        'aggregate_id', r[4], 'payload', r[5], 'created_at', r[6], 'outbox_id', r[7], 'relayed_at', r[8])
    n = n + 1
end
return n
"""

# Trim to MINID = min(age cut-off, for every group: its oldest pending entry, or if none
# pending, its last-delivered id). Everything below that id has been delivered to and
# acknowledged by every group, so trimming it loses nothing. It runs as one script, so no
# group can move between reading the groups and trimming. `~` lets Redis trim less than
# asked (whole radix-tree nodes only), never more.
_TRIM = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return 0 end
local floor = ARGV[1]
local function less(a, b)
    local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
    local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
    ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
    if ams ~= bms then return ams < bms end
    return aseq < bseq
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    local keep = info['last-delivered-id']
    if tonumber(info['pending']) > 0 then
        keep = redis.call('XPENDING', key, info['name'])[2]
    end
    if less(keep, floor) then floor = keep end
end
return redis.call('XTRIM', key, 'MINID', '~', floor)
"""


async def trim_stream(redis: aioredis.Redis, prefix: str, *, retention_s: float) -> int:
    """Trim stream entries older than `retention_s` that every consumer group has acknowledged."""
    cutoff_ms = max(0, int((time.time() - retention_s) * 1000))
    return int(await redis.eval(_TRIM, 1, events.stream_key(prefix), f"{cutoff_ms}-0"))


class Relay:
    """Outbox → Redis Stream. `run()` is the relay process; `relay_once()` one batch."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        prefix: str,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        lease_ttl_s: float = 10.0,
        retention_s: float = 24 * 3600.0,
        outbox_retention_s: float | None = 7 * 24 * 3600.0,
        housekeeping_interval_s: float = 60.0,
        retry_backoff_s: float = 1.0,
        recovery_margin_s: float = 60.0,
        name: str | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.prefix = prefix
        self.stream = events.stream_key(prefix)
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.lease_ttl_s = lease_ttl_s
        self.retention_s = retention_s  # stream entries younger than this are kept even if acknowledged
        self.outbox_retention_s = outbox_retention_s  # relayed outbox rows older than this are deleted; None keeps them
        self.housekeeping_interval_s = housekeeping_interval_s
        self.retry_backoff_s = retry_backoff_s
        self.recovery_margin_s = recovery_margin_s
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.token = f"{self.name}-{uuid.uuid4().hex[:8]}"  # unique even if a name is reused
        self.is_leader = False
        self.relayed = 0  # rows sent by this instance (re-sends included)
        self._renewed_at = 0.0
        self._housekept_at = 0.0
        self._on_notify: Any = None
        self._xadd_batch = redis.register_script(_XADD_BATCH)

    # --- one batch ------------------------------------------------------------------

    async def relay_once(self) -> int:
        """Relay one batch of the oldest unrelayed rows; returns how many were sent."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_SELECT, self.batch_size)
            if not rows:
                return 0
            await self._xadd_batch(keys=[self.stream], args=[json.dumps([_fields(r) for r in rows], ensure_ascii=False)])
            await self._after_xadd(rows)
            await conn.execute(_MARK, [r["id"] for r in rows])
        self.relayed += len(rows)
        events.RELAYED.inc(len(rows))
        return len(rows)

    async def _after_xadd(self, rows: list[asyncpg.Record]) -> None:
        """Test seam: the moment between the XADDs and the commit (a crash here re-sends the batch)."""

    async def drain(self) -> int:
        """Relay until no unrelayed row is visible; returns how many were sent."""
        total = 0
        while n := await self.relay_once():
            total += n
        return total

    # --- the lease ------------------------------------------------------------------

    async def hold_lease(self) -> bool:
        """Take or renew the leader lease; True while this relay leads."""
        now = time.monotonic()
        ttl_ms = int(self.lease_ttl_s * 1000)
        key = events.lease_key(self.prefix)
        if self.is_leader:
            if now - self._renewed_at < self.lease_ttl_s / 3:
                return True
            if await self.redis.eval(_RENEW, 1, key, self.token, ttl_ms):
                self._renewed_at = now
                return True
            log.warning("relay %s lost the leader lease", self.name)
            self._set_leader(False)
        if await self.redis.set(key, self.token, nx=True, px=ttl_ms):
            log.info("relay %s is the leader", self.name)
            self._renewed_at = now
            self._housekept_at = 0.0  # a new leader checks the stream for lost entries first
            self._set_leader(True)
        return self.is_leader

    async def release_lease(self) -> None:
        """Give the lease up at once so a standby takes over without waiting for expiry."""
        if self.is_leader:
            try:
                await self.redis.eval(_RELEASE, 1, events.lease_key(self.prefix), self.token)
            finally:
                self._set_leader(False)

    def _set_leader(self, value: bool) -> None:
        self.is_leader = value
        events.RELAY_LEADER.set(1 if value else 0)

    # --- Redis losing writes --------------------------------------------------------

    async def recover_lost_entries(self) -> int:
        """Re-relay outbox rows whose stream entries Redis lost; returns how many entries were re-sent.

        Redis acknowledges a write before it is on disk (appendfsync everysec), and a
        failover can promote a replica that missed the last writes. The outbox row is then
        marked relayed but its entry is gone. Every entry carries its row's `relayed_at`
        (the relay transaction's now()), so the newest entries tell up to when the stream is
        complete; any row relayed later was lost and is sent again, with a margin for
        relays overlapping at a lease hand-over. Re-sent events that consumers had already
        applied are skipped as duplicates. An empty or missing stream counts as complete up
        to `retention_s` ago, which is what trimming would have left.
        """
        marks: list[datetime] = []
        before = "+"
        for _ in range(100):  # page back past requeued dead letters, which carry no relayed_at
            page = await self.redis.xrevrange(self.stream, max=before, count=100)
            marks = [
                datetime.fromisoformat(events.as_str(v))
                for _, f in page for k, v in f.items() if events.as_str(k) == "relayed_at"
            ]
            if marks or len(page) < 100:
                break
            before = "(" + events.as_str(page[-1][0])
        async with self.pool.acquire() as conn:
            since = max(marks) if marks else await conn.fetchval("SELECT now() - make_interval(secs => $1)", float(self.retention_s))
            lost = await conn.fetchval("SELECT count(*) FROM outbox WHERE relayed_at > $1", since)
        if not lost:
            return 0
        log.error(
            "relay %s: %d outbox rows relayed after %s are missing from the stream (Redis lost writes); re-relaying",
            self.name, lost, since.isoformat(),
        )
        return await self.replay(since=since - timedelta(seconds=self.recovery_margin_s))

    async def replay(self, *, since: datetime) -> int:
        """XADD again every outbox row relayed at or after `since` (oldest first); returns how many.

        For recovery after Redis lost data, or to give a new consumer group history older
        than the stream keeps. Consumers skip what they had applied.
        """
        sent = 0
        after: tuple[datetime, int] = (since - timedelta(microseconds=1), 0)
        while True:
            rows = await self.pool.fetch(_REPLAY, after[0], after[1], self.batch_size)
            if not rows:
                return sent
            await self._xadd_batch(keys=[self.stream], args=[json.dumps([_fields(r) for r in rows], ensure_ascii=False)])
            sent += len(rows)
            events.RELAYED.inc(len(rows))
            after = (rows[-1]["relayed_at"], rows[-1]["id"])

    # --- housekeeping ---------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Re-relay what Redis lost, trim the stream, prune old relayed outbox rows."""
        await self.recover_lost_entries()
        trimmed = await trim_stream(self.redis, self.prefix, retention_s=self.retention_s)
        pruned = 0
        if self.outbox_retention_s is not None:
            while True:  # in chunks, so no statement holds many row locks for long
                status = await self.pool.execute(_PRUNE, float(self.outbox_retention_s), 5000)
                n = int(status.split()[-1])
                pruned += n
                if n < 5000:
                    break
        if trimmed or pruned:
            log.info("relay housekeeping: trimmed %d stream entries, pruned %d outbox rows", trimmed, pruned)

    # --- the process ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until `stop` is set: lead or stand by, wake on NOTIFY, poll as a fallback."""
        stop = stop or asyncio.Event()
        wake = asyncio.Event()
        listener: Any = None
        self._on_notify = lambda *_: wake.set()

        try:
            while not stop.is_set():
                try:
                    if not await self.hold_lease():
                        if listener is not None:
                            await self._unlisten(listener)
                            listener = None
                        await _wait(stop, None, self.lease_ttl_s / 3)
                        continue
                    if listener is None or listener.is_closed():
                        listener = await self.pool.acquire()
                        await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
                        wake.set()  # rows may have committed while nobody listened
                    wake.clear()  # before the batch: a commit during it wakes the next wait
                    n = await self.relay_once()
                    if time.monotonic() - self._housekept_at >= self.housekeeping_interval_s:
                        self._housekept_at = time.monotonic()
                        await self.housekeeping()
                    if n < self.batch_size:
                        # Never sleep past the next lease renewal, or an idle leader would lose its lease.
                        await _wait(stop, wake, min(self.poll_interval_s, self.lease_ttl_s / 3))
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception:
                    log.exception("relay %s: batch failed; retrying in %.1f s", self.name, self.retry_backoff_s)
                    if listener is not None:
                        await self._unlisten(listener)
                        listener = None
                    await _wait(stop, None, self.retry_backoff_s)
        finally:
            if listener is not None:
                await self._unlisten(listener)
            try:
                await self.release_lease()
            except Exception:  # Redis gone: the lease expires on its own
                log.warning("relay %s could not release its lease", self.name, exc_info=True)

    async def _unlisten(self, conn: Any) -> None:
        try:
            if not conn.is_closed():
                await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception:
            log.debug("UNLISTEN failed", exc_info=True)
        try:
            await self.pool.release(conn)
        except Exception:
            log.debug("releasing the listen connection failed", exc_info=True)


def _fields(r: asyncpg.Record) -> list[str]:
    """An outbox row as the values of _XADD_BATCH's fields, in its order."""
    return [str(r["event_id"]), r["type"], r["aggregate"], r["aggregate_id"], r["payload"],
            r["created_at"].isoformat(), str(r["id"]), r["relayed_at"].isoformat()]


async def _wait(stop: asyncio.Event, wake: asyncio.Event | None, timeout_s: float) -> None:
    """Sleep up to `timeout_s`, returning early when `stop` (or `wake`) is set."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def run_relay(settings: Any, *, stop: asyncio.Event | None = None, **options: Any) -> None:
    """The relay process for `settings` (core.settings.Settings): what `serena events relay` runs."""
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=3)
    redis = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        await Relay(pool=pool, redis=redis, prefix=settings.redis_prefix, **options).run(stop)
    finally:
        await redis.aclose()
        await pool.close()


# --- operations: what `serena events stats` / `dead-letters` / `requeue` call ------------


async def bus_stats(*, pool: asyncpg.Pool, redis: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """A snapshot of the bus: outbox backlog, stream, groups (pending, lag), dead letters, leader."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(created_at)) AS age_s FROM outbox WHERE relayed_at IS NULL"
    )
    stream = events.stream_key(prefix)
    out: dict[str, Any] = {
        "outbox_unrelayed": row["n"],
        "outbox_oldest_unrelayed_s": float(row["age_s"]) if row["age_s"] is not None else None,
        "outbox_rows_estimate": int(await pool.fetchval("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE relname = 'outbox'") or 0),
        "stream": stream,
        "stream_length": 0,
        "stream_first_id": None,
        "stream_last_id": None,
        "groups": [],
        "dead_letters": int(await redis.xlen(events.dead_letter_key(prefix))),
        "leader": await redis.get(events.lease_key(prefix)),
    }
    if await redis.exists(stream):
        info = await redis.xinfo_stream(stream)
        first = info.get("first-entry")
        out.update(
            stream_length=info["length"],
            stream_first_id=events.as_str(first[0]) if first else None,
            stream_last_id=events.as_str(info["last-generated-id"]),
        )
        for g in await redis.xinfo_groups(stream):
            out["groups"].append(
                {
                    "name": events.as_str(g["name"]),
                    "consumers": g["consumers"],
                    "pending": g["pending"],
                    "lag": g.get("lag"),  # None when Redis cannot tell (entries deleted in between)
                    "last_delivered_id": events.as_str(g["last-delivered-id"]),
                }
            )
    if isinstance(out["leader"], bytes):
        out["leader"] = out["leader"].decode()
    return out


async def dead_letters(redis: aioredis.Redis, prefix: str, *, count: int = 20) -> list[dict[str, str]]:
    """The newest `count` dead letters, newest first, each with its `dead_id`."""
    rows = await redis.xrevrange(events.dead_letter_key(prefix), count=count)
    return [{"dead_id": events.as_str(sid), **{events.as_str(k): events.as_str(v) for k, v in f.items()}} for sid, f in rows]


async def requeue_dead_letters(redis: aioredis.Redis, prefix: str, dead_ids: list[str] | None = None) -> int:
    """Put dead letters back on the stream (after fixing the handler); returns how many.

    Every group receives a requeued event again; groups that had applied it skip it as a
    duplicate (processed_events), so requeueing is safe for all of them. Each entry is
    re-added before it is removed from the dead-letter stream: a crash in between requeues
    it twice at worst (harmless, see above), never loses it.
    """
    dead = events.dead_letter_key(prefix)
    if dead_ids is None:
        rows = await redis.xrange(dead)
    else:
        rows = []
        for did in dead_ids:
            rows += await redis.xrange(dead, min=did, max=did)
    for sid, fields in rows:
        # Without its relayed_at, so the requeued entry does not look like the newest relayed
        # batch to recover_lost_entries (which would re-send everything since it was relayed).
        entry = {events.as_str(k): events.as_str(v) for k, v in fields.items()
                 if not events.as_str(k).startswith("dead_") and events.as_str(k) != "relayed_at"}
        await redis.xadd(events.stream_key(prefix), entry)
        await redis.xdel(dead, sid)
    return len(rows)
