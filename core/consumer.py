"""The event bus, consumer side: a consumer group that applies each event's effect exactly once.

A consumer reads the stream through its Redis consumer group and, for a batch of
entries, opens one database transaction that first records the event ids in
`processed_events(consumer, event_id)` with ON CONFLICT DO NOTHING, then calls the handler
only for the ids that were new, then commits. It acknowledges (XACK) only after the
commit. So a crash before the commit leaves the entries pending and nothing applied; a
crash after the commit and before the XACK re-delivers them, and the insert finds the ids
already there and skips the handler. Two consumers racing on the same event (a claim
while the first is still working) serialise on the primary key of `processed_events`:
the second waits for the first to commit, then sees a conflict and skips.

Batching the transaction makes the happy path one commit per batch instead of per event;
when a batch fails, each event is retried in a transaction of its own, so one poison
event does not hold back its neighbours. An event whose handler keeps failing is moved to
the dead-letter stream with its error after `max_attempts` deliveries, and acknowledged.
Database and Redis outages are not the event's fault: those errors are retried in place
with back-off and never count towards dead-lettering.

On start a consumer first re-processes its own pending entries (XREADGROUP from id 0);
it periodically claims entries left idle by dead consumers (XAUTOCLAIM), which is also
how a failed event gets its next attempt.

`processed_events` would grow by one row per event per group forever; `prune_processed`
(run every `events_prune_interval_s` by the worker's periodic jobs, `serena.periodic`)
deletes the rows no re-delivery can still need. Its docstring gives the argument.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import events
from core.events import Event, as_str

log = logging.getLogger(__name__)

Handler = Callable[[Any, Event], Awaitable[None]]
"""`async def handler(db, event)`: `db` is the transaction's asyncpg connection or AsyncSession."""

Entry = tuple[Any, Any]  # (stream id, fields) as redis-py returns them

_MARK_PG = """
    INSERT INTO processed_events (consumer, event_id)
    SELECT $1, e FROM unnest($2::uuid[]) AS e ORDER BY e
    ON CONFLICT DO NOTHING
    RETURNING event_id
"""
_MARK_SA = text("""
    INSERT INTO processed_events (consumer, event_id)
    SELECT :consumer, e FROM unnest(CAST(:ids AS uuid[])) AS e ORDER BY e
    ON CONFLICT DO NOTHING
    RETURNING event_id
""")
# Ids are inserted in sorted order so two consumers inserting overlapping batches take the
# row locks in the same order and cannot deadlock on each other.

# Remove consumers that are idle and own no pending entry. One script, so an entry cannot
# be delivered to the consumer between the check and the delete (DELCONSUMER drops the
# consumer's pending entries, which would lose them).
_DROP_IDLE = """
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    local match = (ARGV[3] == '' and info['name'] ~= ARGV[4]) or (ARGV[3] ~= '' and info['name'] == ARGV[3])
    if match and tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
        removed = removed + 1
    end
end
return removed
"""


def is_transient(exc: BaseException) -> bool:
    """An infrastructure error (connection lost, deadlock, serialisation) rather than the event's fault."""
    transient = (
        ConnectionError,
        TimeoutError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
    )
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:  # SQLAlchemy wraps the driver's error
        if isinstance(cur, transient) or getattr(cur, "connection_invalidated", False):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


class Stopped(Exception):
    """The consumer was asked to stop while retrying; the entries stay pending."""


class Consumer:
    """A member of consumer group `group`; `run()` until stopped.

    `group` is also the `consumer` column of processed_events, so it names the effect:
    two services applying different effects of the same event need two groups.
    """

    def __init__(
        self,
        *,
        group: str,
        handler: Handler,
        db: asyncpg.Pool | async_sessionmaker[AsyncSession],
        redis: aioredis.Redis,
        prefix: str,
        name: str | None = None,
        types: Iterable[str] | None = None,
        batch_size: int = 100,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        claim_interval_s: float = 5.0,
        max_attempts: int = 5,
        max_deliveries: int = 20,
        start_id: str = "0",
        drop_idle_consumers_ms: int = 3600_000,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
    ) -> None:
        if not group or len(group) > 64:
            raise ValueError("group must be 1..64 characters (it is the processed_events.consumer key)")
        self.group = group
        self.handler = handler
        self.db = db
        self.redis = redis
        self.prefix = prefix
        self.stream = events.stream_key(prefix)
        self.dead_letters = events.dead_letter_key(prefix)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.types = tuple(types) if types is not None else None  # fnmatch patterns: "delivery.*"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms  # an entry pending this long is retried / taken from a dead consumer
        self.claim_interval_s = claim_interval_s
        self.max_attempts = max_attempts  # handler failures before dead-lettering
        self.max_deliveries = max_deliveries  # deliveries without an outcome (the consumer died each time)
        self.start_id = start_id  # where a new group starts: "0" = everything still in the stream, "$" = new only
        self.drop_idle_consumers_ms = drop_idle_consumers_ms
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = {"processed": 0, "duplicates": 0, "dead_lettered": 0, "failures": 0, "ignored": 0, "missing": 0}
        self._stop = asyncio.Event()
        self._labels = {"consumer": group}

    # --- setup ----------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until `stop` is set (or `stop()` is called)."""
        if stop is not None:
            self._stop = stop
        backlog_from: str | None = "0"  # own pending entries first
        next_claim = 0.0
        backoff = self.retry_backoff_s
        await self._retrying(self.ensure_group)
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_claim:
                    await self.claim_stale()
                    next_claim = time.monotonic() + self.claim_interval_s
                if backlog_from is not None:
                    entries = await self._read(backlog_from)
                    if not entries:
                        backlog_from = None
                        continue
                    backlog_from = as_str(entries[-1][0])
                    await self.process(entries, redelivered=True)
                else:
                    entries = await self._read(">", block_ms=self.block_ms)
                    if entries:
                        await self.process(entries)
                backoff = self.retry_backoff_s
            except Stopped:
                break
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer %s/%s: group or stream vanished; recreating", self.group, self.name)
                await self._retrying(self.ensure_group)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("consumer %s/%s: %s; retrying in %.1f s", self.group, self.name, exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                backlog_from = "0"  # whatever was read before the error is pending: take it again
        try:
            await self.redis.eval(_DROP_IDLE, 1, self.stream, self.group, 0, self.name, "")
        except Exception:
            log.debug("could not remove consumer %s on stop", self.name, exc_info=True)

    def stop(self) -> None:
        """Ask `run()` to return after the current batch."""
        self._stop.set()

    async def run_until_idle(self) -> None:
        """Process everything currently available, then return (tests, one-shot tools)."""
        await self.ensure_group()
        backlog_from = "0"
        while entries := await self._read(backlog_from):
            backlog_from = as_str(entries[-1][0])
            await self.process(entries, redelivered=True)
        await self.claim_stale()
        while entries := await self._read(">"):
            await self.process(entries)

    async def _read(self, from_id: str, *, block_ms: int | None = None) -> list[Entry]:
        reply = await self.redis.xreadgroup(
            self.group, self.name, {self.stream: from_id}, count=self.batch_size, block=block_ms
        )
        if not reply:
            return []
        # RESP2: [[stream, entries]]; RESP3: {stream: [entries]}
        return list(reply.values())[0][0] if isinstance(reply, dict) else reply[0][1]

    # --- claiming -------------------------------------------------------------------

    async def claim_stale(self) -> int:
        """Take over entries pending longer than `claim_idle_ms` (dead consumers, failed attempts) and process them."""
        start = "0-0"
        total = 0
        while not self._stop.is_set():
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.name, self.claim_idle_ms, start_id=start, count=self.batch_size
            )
            next_start, claimed = as_str(reply[0]), reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:
                # Only possible if someone trimmed or deleted by hand: the relay never trims
                # unacknowledged entries. Loud, counted, and the outbox still has the events.
                self.stats["missing"] += len(deleted)
                events.MISSING.labels(**self._labels).inc(len(deleted))
                log.error("consumer %s: %d pending entries were deleted from the stream: %s", self.group, len(deleted), deleted[:10])
            claimed = [e for e in claimed if e[0] is not None]
            if claimed:
                total += len(claimed)
                await self.process(claimed, redelivered=True)
            if next_start == "0-0":
                break
            start = next_start
        if self.drop_idle_consumers_ms:
            await self.redis.eval(_DROP_IDLE, 1, self.stream, self.group, self.drop_idle_consumers_ms, "", self.name)
        return total

    # --- processing -----------------------------------------------------------------

    async def process(self, entries: Sequence[Entry], *, redelivered: bool = False) -> None:
        """Apply a batch of entries read by this consumer, then acknowledge them."""
        counts = await self._delivery_counts(entries) if redelivered else {}
        todo: list[Event] = []
        ack: list[str] = []
        for raw_id, fields in entries:
            sid = as_str(raw_id)
            if not fields:  # deleted from the stream while pending
                self.stats["missing"] += 1
                events.MISSING.labels(**self._labels).inc()
                log.error("consumer %s: pending entry %s has no data (deleted from the stream)", self.group, sid)
                ack.append(sid)
                continue
            try:
                ev = Event.from_fields(sid, fields)
            except Exception as exc:  # noqa: BLE001 - any malformed entry is poison
                await self._dead_letter(sid, fields, f"malformed entry: {exc!r}", counts.get(sid, 1))
                continue
            if self.types is not None and not any(fnmatch.fnmatchcase(ev.type, p) for p in self.types):
                self.stats["ignored"] += 1
                events.IGNORED.labels(**self._labels).inc()
                ack.append(sid)
                continue
            if counts.get(sid, 1) > self.max_deliveries:
                # Delivered this often with neither an ack nor a recorded failure: the
                # consumer process died on it each time (a crash, OOM, a handler that exits).
                await self._dead_letter(sid, fields, f"delivered {counts[sid]} times without an outcome", counts[sid])
                continue
            todo.append(ev)
        if todo:
            try:
                await self._retrying(lambda: self._apply(todo))
                ack.extend(ev.stream_id for ev in todo)
            except Stopped:
                raise
            except Exception as exc:
                if len(todo) == 1:
                    await self._failed(todo[0], exc, counts)
                else:
                    # Isolate the failure: each event in a transaction of its own.
                    await self._ack_ids(ack)
                    ack = []
                    for ev in todo:
                        try:
                            await self._retrying(lambda ev=ev: self._apply([ev]))
                        except Stopped:
                            raise
                        except Exception as exc1:
                            await self._failed(ev, exc1, counts)
                        else:
                            await self._ack_ids([ev.stream_id])
        await self._ack_ids(ack)

    async def _apply(self, batch: list[Event]) -> None:
        """One transaction: record the ids, run the handler for the new ones, commit."""
        ids = sorted({ev.event_id for ev in batch})
        if isinstance(self.db, asyncpg.Pool):
            async with self.db.acquire() as conn, conn.transaction():
                new = {r[0] for r in await conn.fetch(_MARK_PG, self.group, ids)}
                applied = await self._run_handlers(conn, batch, new)
        else:
            async with self.db() as session, session.begin():
                result = await session.execute(_MARK_SA, {"consumer": self.group, "ids": ids})
                new = {r[0] for r in result}
                applied = await self._run_handlers(session, batch, new)
        dup = len(batch) - applied
        self.stats["processed"] += applied
        self.stats["duplicates"] += dup
        events.PROCESSED.labels(**self._labels).inc(applied)
        if dup:
            events.DUPLICATES.labels(**self._labels).inc(dup)

    async def _run_handlers(self, db: Any, batch: list[Event], new: set[Any]) -> int:
        done: set[Any] = set()
        for ev in batch:
            # The same event twice in one batch (a relay re-send) is applied once.
            if ev.event_id in new and ev.event_id not in done:
                done.add(ev.event_id)
                await self.handler(db, ev)
        return len(done)

    async def _failed(self, ev: Event, exc: BaseException, counts: dict[str, int]) -> None:
        """A handler raised for `ev`: leave it pending for a later attempt, or dead-letter it."""
        self.stats["failures"] += 1
        events.HANDLER_FAILURES.labels(**self._labels).inc()
        attempts = counts.get(ev.stream_id) or (await self._delivery_counts([(ev.stream_id, None)])).get(ev.stream_id, 1)
        if attempts >= self.max_attempts:
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            await self._dead_letter(ev.stream_id, ev.to_fields(), error, attempts)
        else:
            log.warning(
                "consumer %s: %s %s failed (attempt %d of %d), retried after %d ms: %r",
                self.group, ev.type, ev.event_id, attempts, self.max_attempts, self.claim_idle_ms, exc,
            )

    async def _dead_letter(self, sid: str, fields: Any, error: str, attempts: int) -> None:
        """Move an entry to the dead-letter stream, then acknowledge it."""
        entry = {as_str(k): as_str(v) for k, v in dict(fields).items()}
        entry.update(
            {
                "dead_group": self.group,
                "dead_consumer": self.name,
                "dead_error": error[:2000],
                "dead_attempts": str(attempts),
                "dead_stream_id": sid,
                "dead_at": datetime.now(UTC).isoformat(),
            }
        )
        # Dead letter first, then XACK: a crash in between leaves the entry pending, so it
        # is dead-lettered again (a duplicate dead letter, never a lost event). Not one
        # MULTI, because on Redis Cluster the two keys live in different slots.
        await self._retrying(lambda: self.redis.xadd(self.dead_letters, entry))
        await self._retrying(lambda: self.redis.xack(self.stream, self.group, sid))
        self.stats["dead_lettered"] += 1
        events.DEAD_LETTERED.labels(**self._labels).inc()
        log.error("consumer %s: dead-lettered %s after %d attempts: %s", self.group, sid, attempts, error)

    async def _delivery_counts(self, entries: Sequence[Entry]) -> dict[str, int]:
        """How many times each entry has been delivered (XPENDING), for entries this consumer holds."""
        ids = [as_str(e[0]) for e in entries]
        if not ids:
            return {}
        rows = await self.redis.xpending_range(
            self.stream, self.group, min=min(ids, key=_id_key), max=max(ids, key=_id_key),
            count=max(len(ids) * 4, 100), consumername=self.name,
        )
        return {as_str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _ack_ids(self, ids: list[str]) -> None:
        if ids:
            await self._retrying(lambda: self._ack(ids))

    async def _ack(self, ids: list[str]) -> None:
        """XACK (a test seam: a crash before this re-delivers committed events)."""
        await self.redis.xack(self.stream, self.group, *ids)

    async def _retrying(self, op: Callable[[], Awaitable[Any]]) -> Any:
        """Run `op`, retrying transient errors with back-off until it succeeds or we are stopped."""
        backoff = self.retry_backoff_s
        while True:
            try:
                return await op()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if self._stop.is_set():
                    raise Stopped from exc
                log.warning("consumer %s/%s: %r; retrying in %.1f s", self.group, self.name, exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass


# --- pruning processed_events -------------------------------------------------------

PROCESSED_RETENTION_S = 14 * 86400.0  # default floor; settings.events_processed_retention_s
PRUNE_CHUNK = 5000  # rows per DELETE (one short transaction each)
PRUNE_MAX_PROTECTED = 10_000  # a group with more unacknowledged entries than this is not pruned this round
OUTBOX_MARGIN_S = 3600.0  # outbox created_at is the transaction's start; ids are taken later, at insert

# One group's rows older than the cutoff, oldest first, minus the protected ids. The cutoff
# is the earlier of `now - retention` and the oldest outbox row's created_at (less a margin):
# every row still in the outbox can be re-sent (`serena events replay`, the relay's recovery),
# and an event is only ever processed after its outbox row was created, so the record of any
# re-sendable event is younger than that. SKIP LOCKED: two pruners never wait on each other,
# and a row a consumer is inserting right now is not touched.
_PRUNE_SQL = """
    DELETE FROM processed_events p
    USING (
        SELECT event_id FROM processed_events
        WHERE consumer = $1
          AND processed_at < LEAST(now() - make_interval(secs => $2),
                                   (SELECT created_at FROM outbox ORDER BY id LIMIT 1) - make_interval(secs => $3))
          AND event_id <> ALL($4::uuid[])
        ORDER BY processed_at
        LIMIT $5
        FOR UPDATE SKIP LOCKED
    ) doomed
    WHERE p.consumer = $1 AND p.event_id = doomed.event_id
"""


def _event_id(fields: Any) -> str | None:
    """The entry's event id as a canonical UUID string; None if it has none or a malformed one (never applied)."""
    for k, v in dict(fields or {}).items():
        if as_str(k) == "event_id":
            try:
                return str(uuid.UUID(as_str(v)))
            except ValueError:
                return None
    return None


async def _stream_event_ids(redis: aioredis.Redis, key: str, *, after: str = "-", limit: int) -> list[str] | None:
    """Event ids of the entries of `key` after stream id `after` (exclusive; "-" = all); None if more than `limit`."""
    ids: list[str] = []
    start = "-" if after == "-" else f"({after}"
    while True:
        page = await redis.xrange(key, min=start, max="+", count=1000)
        for sid, fields in page:
            eid = _event_id(fields)
            if eid:
                ids.append(eid)
        if len(ids) > limit:
            return None
        if len(page) < 1000:
            return ids
        start = f"({as_str(page[-1][0])}"


async def protected_event_ids(redis: aioredis.Redis, prefix: str, *, limit: int = PRUNE_MAX_PROTECTED) -> dict[str, set[str]] | None:
    """For each consumer group of the stream: the event ids it may still be delivered from Redis.

    That is the dead letters (a requeue re-sends them to every group), the group's pending
    entries and every entry after its last-delivered id. Read in that order, so an entry
    moving between those states while we read is seen in one of them. None for "do not
    prune at all" (too many dead letters to be sure); a group left out of the answer (too
    much to read) is not pruned this round. A group that exists only in the database (the
    stream or the group was deleted) is never pruned: its position is unknown.
    """
    stream = events.stream_key(prefix)
    dead = await _stream_event_ids(redis, events.dead_letter_key(prefix), limit=limit * 10)
    if dead is None:
        log.warning("processed_events not pruned: more than %d dead letters (requeue or delete them)", limit * 10)
        return None
    try:
        groups = await redis.xinfo_groups(stream)
    except redis.exceptions.ResponseError:  # no stream: no group has a known position
        return {}
    out: dict[str, set[str]] = {}
    for g in groups:
        info = {as_str(k): v for k, v in g.items()}
        name, last = as_str(info["name"]), as_str(info["last-delivered-id"])
        if int(info.get("pending") or 0) > limit:
            continue
        pending = await redis.xpending_range(stream, name, min="-", max="+", count=limit + 1)
        if len(pending) > limit:
            continue
        pipe = redis.pipeline(transaction=False)
        for row in pending:
            sid = as_str(row["message_id"])
            pipe.xrange(stream, min=sid, max=sid)
        ids = {eid for reply in await pipe.execute() for _sid, fields in reply if (eid := _event_id(fields))}
        later = await _stream_event_ids(redis, stream, after=last, limit=limit)
        if later is None:
            continue
        out[name] = ids | set(later) | set(dead)
    return out


async def prune_processed(db: asyncpg.Pool | asyncpg.Connection, redis: aioredis.Redis, prefix: str, *,
                          retention_s: float = PROCESSED_RETENTION_S, chunk: int = PRUNE_CHUNK) -> dict[str, int]:
    """Delete processed_events rows no re-delivery can still need; rows deleted per group.

    A row is what makes a re-delivered event a no-op, so it may go only when its event can
    no longer reach its group. Events reach a group from three places, and each is covered:

    1. The stream. Entries are trimmed only after every group acknowledged them, but a
       stuck group can keep entries pending (or unread) for as long as it is down, so age
       alone proves nothing: the ids of every entry the group has not acknowledged yet
       (pending, or after its last-delivered id) are read from Redis and kept, whatever
       their age. Groups Redis does not know are not pruned.
    2. Dead letters, which a requeue sends to every group again however old: kept while
       they are in the dead-letter stream.
    3. The outbox, which the relay re-sends from (a relay crash between XADD and marking,
       the recovery after Redis lost writes, `serena events replay`). A row is re-sendable
       as long as it exists (7 days by default), and an event is processed only after its
       outbox row was created, so the cutoff is never later than the oldest outbox row's
       `created_at` (less an hour for transactions that started before they inserted).

    On top of these, nothing younger than `retention_s` (default 14 days, at least a day:
    longer than the outbox's 7 days, the stream's 24 h of acknowledged history and Stripe's
    3 days of webhook retries, which re-emit with the same derived event id) is deleted,
    so a producer that repeats a fact within that window is still caught.
    """
    protected = await protected_event_ids(redis, prefix)
    if not protected:
        return {}
    deleted: dict[str, int] = {}
    for group, ids in protected.items():
        keep = sorted(ids)
        total = 0
        while True:
            status = await db.execute(_PRUNE_SQL, group, float(retention_s), OUTBOX_MARGIN_S, keep, chunk)
            n = int(status.split()[-1])
            total += n
            if n < chunk:
                break
        if total:
            deleted[group] = total
            log.info("processed_events: pruned %d rows of group %s", total, group)
    return deleted


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def run_consumers(consumers: Sequence[Consumer], stop: asyncio.Event | None = None) -> None:
    """Run several consumers in one process until `stop` is set; if one dies, stop the others and re-raise.

    A process (planner, worker) usually hosts the consumers of its domain: one group per
    effect, each with its own handler, all sharing the process's pool and Redis client.
    """
    stop = stop or asyncio.Event()
    for c in consumers:
        c._stop = stop
    tasks = [asyncio.create_task(c.run(), name=f"consumer:{c.group}") for c in consumers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
