"""GPS history in PostGIS: batched COPY into day partitions, de-duplicated by (driver, seq, day).

`store_batch` is the durable step of ingestion: in ONE transaction it COPYs the batch's
fixes into a temporary staging table (binary COPY through asyncpg, ~10x faster than
INSERTs), moves them into `tracking_positions` with `ON CONFLICT DO NOTHING RETURNING`,
records the refused fixes (the duplicates the key just found included) in
`tracking_rejects`, and emits the batch's outbox events. The caller acknowledges the
MQTT messages only after this commit, so an accepted fix is never lost, and the key makes
a re-delivered fix (QoS 1 after a crash) a counted duplicate instead of a second row.

Rejected: COPY straight into the partitioned table. COPY has no ON CONFLICT, so a single
re-delivered fix would fail the whole batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg

from core import events
from tracking.validate import Fix, Last, Reason, Rejected

_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS tracking_stage (
        driver_id integer, seq bigint, ts double precision, received_at double precision,
        lat double precision, lng double precision, accuracy_m real, speed_mps real, heading_deg real,
        edge integer, edge_fraction real, source smallint
    ) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("driver_id", "seq", "ts", "received_at", "lat", "lng", "accuracy_m", "speed_mps", "heading_deg",
                  "edge", "edge_fraction", "source")
_MOVE = """
    INSERT INTO tracking_positions
        (driver_id, seq, day, ts, received_at, geom, accuracy_m, speed_mps, heading_deg, edge, edge_fraction, source)
    SELECT driver_id, seq, (to_timestamp(ts) AT TIME ZONE 'UTC')::date, to_timestamp(ts), to_timestamp(received_at),
           ST_SetSRID(ST_MakePoint(lng, lat), 4326), accuracy_m, speed_mps, heading_deg, edge, edge_fraction, source
    FROM tracking_stage
    ORDER BY driver_id, seq
    ON CONFLICT DO NOTHING
    RETURNING driver_id, seq
"""
# ORDER BY: two replicas inserting overlapping keys take the index locks in one order.
_REJECT_COLUMNS = ("driver_id", "seq", "ts", "reason", "source", "received_at", "raw")


def utc_day(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def _tstz(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


@dataclass
class Stored:
    """What one store_batch committed."""

    inserted: list[Fix] = field(default_factory=list)  # new rows
    duplicates: list[Rejected] = field(default_factory=list)  # already stored before this batch


class Partitions:
    """Remembers which day partitions exist, so the hot path asks PostgreSQL only for a new day."""

    def __init__(self) -> None:
        self.known: set[dt.date] = set()

    async def ensure(self, conn: asyncpg.Connection, days: Iterable[dt.date]) -> None:
        for day in sorted(set(days) - self.known):
            await conn.execute("SELECT tracking_ensure_partition($1)", day)
            self.known.add(day)


async def store_batch(
    conn: asyncpg.Connection,
    fixes: Sequence[Fix],
    rejects: Sequence[Rejected],
    *,
    partitions: Partitions,
    outbox: Sequence[events.NewEvent] = (),
) -> Stored:
    """Durably store a batch in one transaction (see the module docstring); returns the new and duplicate fixes."""
    result = Stored()
    # Partitions first, in their own short transactions: CREATE TABLE ... PARTITION OF takes
    # a lock on the parent that would otherwise be held for the whole batch.
    await partitions.ensure(conn, {utc_day(f.ts) for f in fixes})
    async with conn.transaction():
        returned: set[tuple[int, int]] = set()
        if fixes:
            await conn.execute(_STAGE)
            await conn.copy_records_to_table(
                "tracking_stage",
                records=[(f.driver_id, f.seq, f.ts, f.received_at, f.lat, f.lng, f.accuracy_m, f.speed_mps, f.heading_deg,
                          f.edge, f.edge_fraction, f.source) for f in fixes],
                columns=_STAGE_COLUMNS,
            )
            returned = {(r[0], r[1]) for r in await conn.fetch(_MOVE)}
        for f in fixes:
            if (f.driver_id, f.seq) in returned:
                result.inserted.append(f)
            else:
                result.duplicates.append(Rejected(f.driver_id, Reason.DUPLICATE, f.seq, f.ts, "", f.received_at, f.source))
        all_rejects = [*rejects, *result.duplicates]
        if all_rejects:
            await conn.copy_records_to_table(
                "tracking_rejects",
                records=[(r.driver_id, r.seq, _tstz(r.ts), str(r.reason), r.source, _tstz(r.received_at), r.raw)
                         for r in all_rejects],
                columns=_REJECT_COLUMNS,
            )
        if outbox:
            await events.emit_many(conn, outbox)
    return result


_LATEST = """
    SELECT DISTINCT ON (driver_id) driver_id, seq, extract(epoch FROM ts)::float8 AS ts, ST_Y(geom) AS lat, ST_X(geom) AS lng,
           accuracy_m, speed_mps, heading_deg, edge, edge_fraction, extract(epoch FROM received_at)::float8 AS received_at
    FROM tracking_positions
    WHERE day >= $1 AND ($2::int[] IS NULL OR driver_id = ANY($2::int[]))
    ORDER BY driver_id, ts DESC
"""


async def latest_positions(db: asyncpg.Pool | asyncpg.Connection, *, since_days: int = 1,
                           driver_ids: Sequence[int] | None = None, today: dt.date | None = None) -> list[dict]:
    """The newest stored fix of every driver (or of `driver_ids`) within the last `since_days` days.

    The fleet board's fallback when Redis has no live state, and the source the live state
    is rebuilt from after a Redis restart.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    rows = await db.fetch(_LATEST, today - dt.timedelta(days=since_days), list(driver_ids) if driver_ids is not None else None)
    return [dict(r) for r in rows]


async def last_fixes(db: asyncpg.Pool | asyncpg.Connection, driver_ids: Sequence[int]) -> dict[int, Last]:
    """The motion check's previous fix per driver, from history (used when Redis cannot answer)."""
    rows = await latest_positions(db, driver_ids=driver_ids)
    return {r["driver_id"]: Last(r["ts"], r["lat"], r["lng"], r["accuracy_m"], r["seq"]) for r in rows}


async def rejection_counts(db: asyncpg.Pool | asyncpg.Connection, *, driver_id: int, since: dt.datetime | None = None) -> dict[str, int]:
    """Refused fixes of one driver by reason (since `since`, default: the last 24 h)."""
    since = since or dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    rows = await db.fetch("SELECT reason, count(*) AS n FROM tracking_rejects WHERE driver_id = $1 AND received_at >= $2"
                          " GROUP BY reason ORDER BY reason", driver_id, since)
    return {r["reason"]: r["n"] for r in rows}


async def track(db: asyncpg.Pool | asyncpg.Connection, *, driver_id: int, start: dt.datetime, end: dt.datetime,
                limit: int = 10_000) -> list[dict]:
    """A driver's stored fixes between start and end, in event time."""
    rows = await db.fetch(
        "SELECT seq, extract(epoch FROM ts)::float8 AS ts, ST_Y(geom) AS lat, ST_X(geom) AS lng, accuracy_m, speed_mps,"
        " heading_deg, edge, edge_fraction FROM tracking_positions"
        " WHERE driver_id = $1 AND day BETWEEN $2 AND $3 AND ts >= $4 AND ts < $5 ORDER BY ts LIMIT $6",
        driver_id, start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date(), start, end, limit)
    return [dict(r) for r in rows]


async def apply_retention(db: asyncpg.Pool | asyncpg.Connection, *, retention_days: int, today: dt.date | None = None) -> int:
    """Drop history partitions and delete refused fixes older than the retention; returns partitions dropped."""
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = today - dt.timedelta(days=retention_days)
    dropped = await db.fetchval("SELECT tracking_drop_partitions_before($1)", cutoff)
    await db.execute("DELETE FROM tracking_rejects WHERE received_at < $1",
                     dt.datetime.combine(cutoff, dt.time(), dt.UTC))
    return int(dropped)
