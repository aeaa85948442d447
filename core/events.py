"""The event bus, producer side: a domain writes its event into the outbox in its own transaction.

Transactional outbox: `emit` inserts an `outbox` row through the caller's session or
connection, so the event exists if and only if the state change it describes commits.
The relay (`core.relay`) moves committed rows to the Redis Stream `<prefix>events`;
consumers (`core.consumer`) read it through consumer groups and are idempotent on the
event id. Delivery is at least once; the effect of an event is applied exactly once per
consumer. docs/events.md describes the guarantees and how to add a consumer.

This module also holds what the three parts share: the `Event` shape, the stream keys and
the Prometheus counters.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# Column widths of the outbox table (core.models.OutboxEvent).
_MAX_NAME = 64

# --- stream keys -------------------------------------------------------------------------


def stream_key(prefix: str) -> str:
    """The Redis Stream every event is relayed to."""
    return prefix + "events"


def dead_letter_key(prefix: str) -> str:
    """The stream poison events are moved to (never trimmed by the relay)."""
    return prefix + "events:dead"


def lease_key(prefix: str) -> str:
    """The Redis key holding the relay leader's lease."""
    return prefix + "events:relay:leader"


# --- metrics -----------------------------------------------------------------------------

RELAYED = Counter("serena_events_relayed_total", "Outbox rows added to the event stream (re-sends after a relay crash included)")
PROCESSED = Counter("serena_events_processed_total", "Events whose effect a consumer applied", ["consumer"])
DUPLICATES = Counter("serena_events_duplicates_total", "Deliveries skipped because the consumer had already applied the event", ["consumer"])
DEAD_LETTERED = Counter("serena_events_dead_lettered_total", "Events moved to the dead-letter stream", ["consumer"])
HANDLER_FAILURES = Counter("serena_events_handler_failures_total", "Handler attempts that raised (each is retried or dead-lettered)", ["consumer"])
IGNORED = Counter("serena_events_ignored_total", "Events acknowledged without a handler call because the consumer does not take their type", ["consumer"])
MISSING = Counter("serena_events_missing_total", "Pending entries found deleted from the stream (should stay 0: the relay never trims unacknowledged entries)", ["consumer"])
RELAY_LEADER = Gauge("serena_events_relay_leader", "1 while this process holds the relay lease")


# --- the event ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event as a consumer sees it."""

    event_id: uuid.UUID
    type: str  # dotted name: "order.paid", "delivery.completed"
    payload: dict[str, Any]
    aggregate: str = ""  # the kind of thing that changed: "order"
    aggregate_id: str = ""  # which one: the order id as text
    created_at: str = ""  # ISO 8601, from the outbox row (the producer's commit time, roughly)
    stream_id: str = ""  # the Redis stream entry id ("" before relay); differs between re-sends

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "event_id": str(self.event_id),
            "type": self.type,
            "aggregate": self.aggregate,
            "aggregate_id": self.aggregate_id,
            "payload": dumps(self.payload),
            "created_at": self.created_at,
        }

    @classmethod
    def from_fields(cls, stream_id: str | bytes, fields: Mapping[Any, Any]) -> Event:
        """Parse a stream entry; raises ValueError / KeyError on a malformed one."""
        f = {as_str(k): as_str(v) for k, v in fields.items()}
        payload = json.loads(f["payload"])
        if not isinstance(payload, dict):
            raise ValueError("payload is not a JSON object")
        return cls(
            event_id=uuid.UUID(f["event_id"]),
            type=f["type"],
            payload=payload,
            aggregate=f.get("aggregate", ""),
            aggregate_id=f.get("aggregate_id", ""),
            created_at=f.get("created_at", ""),
            stream_id=as_str(stream_id),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to emit with `emit_many`."""

    type: str
    payload: Mapping[str, Any]
    aggregate: str = ""
    aggregate_id: str | int | uuid.UUID = ""
    event_id: uuid.UUID | None = None


def as_str(value: Any) -> str:
    """Text of a Redis reply item, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)  # Decimal as text: money must not go through a float
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"event payload value of type {type(value).__name__} is not JSON-serialisable")


def dumps(payload: Mapping[str, Any]) -> str:
    """Payload → compact JSON (UUID, Decimal, datetime and enums as text)."""
    return json.dumps(payload, default=_json_default, separators=(",", ":"), ensure_ascii=False)


# --- emitting ----------------------------------------------------------------------------

_INSERT_PG = (
    "INSERT INTO outbox (event_id, type, aggregate, aggregate_id, payload) "
    "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (event_id) DO NOTHING"
)
_INSERT_SA = text(
    "INSERT INTO outbox (event_id, type, aggregate, aggregate_id, payload) "
    "VALUES (:event_id, :type, :aggregate, :aggregate_id, CAST(:payload AS jsonb)) ON CONFLICT (event_id) DO NOTHING"
)

Db = AsyncSession | AsyncConnection | asyncpg.Connection | Any  # Any: asyncpg's pool connection proxy


def _row(ev: NewEvent) -> tuple[uuid.UUID, str, str, str, str]:
    if not isinstance(ev.payload, Mapping):
        raise TypeError(f"event payload must be a mapping, got {type(ev.payload).__name__}")
    if not ev.type or len(ev.type) > _MAX_NAME:
        raise ValueError(f"event type must be 1..{_MAX_NAME} characters, got {ev.type!r}")
    aggregate_id = str(ev.aggregate_id)
    if len(ev.aggregate) > _MAX_NAME or len(aggregate_id) > _MAX_NAME:
        raise ValueError(f"aggregate and aggregate_id are at most {_MAX_NAME} characters")
    return (ev.event_id or uuid.uuid4(), ev.type, ev.aggregate, aggregate_id, dumps(ev.payload))


async def emit_many(db: Db, events: Iterable[NewEvent]) -> list[uuid.UUID]:
    """Add outbox rows for `events` inside the caller's transaction; returns their event ids.

    `db` is an SQLAlchemy AsyncSession / AsyncConnection or an asyncpg connection. Nothing
    is published unless and until the caller commits. An explicit `event_id` makes the
    emit idempotent (a retried webhook emitting the same id adds no second row).
    """
    rows = [_row(ev) for ev in events]
    if not rows:
        return []
    if isinstance(db, AsyncSession | AsyncConnection):
        params = [dict(zip(("event_id", "type", "aggregate", "aggregate_id", "payload"), r, strict=True)) for r in rows]
        await db.execute(_INSERT_SA, params if len(params) > 1 else params[0])
    else:
        # An asyncpg connection in autocommit would publish the event whether or not the
        # state change it describes commits, which is exactly what the outbox exists to prevent.
        if not db.is_in_transaction():
            raise RuntimeError("emit needs the caller's transaction: call it inside `async with conn.transaction()`")
        if len(rows) == 1:
            await db.execute(_INSERT_PG, *rows[0])
        else:
            await db.executemany(_INSERT_PG, rows)
    return [r[0] for r in rows]


async def emit(
    db: Db,
    *,
    type: str,  # noqa: A002 - the event's name is its type
    payload: Mapping[str, Any],
    aggregate: str = "",
    aggregate_id: str | int | uuid.UUID = "",
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Add one outbox row inside the caller's transaction; returns the event id."""
    ids = await emit_many(db, [NewEvent(type, payload, aggregate, aggregate_id, event_id)])
    return ids[0]
