"""Tracking's tables (created by migration t0001; this module mirrors them for the ORM).

`tracking_positions` is partitioned by day in SQL (see the migration); ingestion writes it
with COPY through asyncpg, never through the ORM, so its mapping here is for reading
(reports, admin) only.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import BigInteger, Date, Float, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import DateTime

from core.db import Base


class Source:
    """Where a fix came in (tracking_positions.source, tracking_rejects.source)."""

    MQTT = 0  # serena/v1/drivers/{id}/location through the broker
    WEBSOCKET = 1  # /ws/driver
    HTTP_BATCH = 2  # POST /v1/tracking/me/batch (offline buffer after reconnect)


class Position(Base):
    """One accepted GPS fix of a driver (history). Key (driver_id, seq, day) is the de-duplication rule."""

    __tablename__ = "tracking_positions"
    __table_args__ = {"postgresql_partition_by": "RANGE (day)"}

    driver_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the driver app's counter, per driver
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # UTC date of ts: the partition key
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # event time (the device's clock)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when ingest first saw it
    geom: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))  # as reported
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    speed_mps: Mapped[float | None] = mapped_column(Float)
    heading_deg: Mapped[float | None] = mapped_column(Float)
    edge: Mapped[int | None] = mapped_column(Integer)  # map-matched directed edge of the road graph
    edge_fraction: Mapped[float | None] = mapped_column(Float)  # position along that edge, 0..1
    source: Mapped[int] = mapped_column(SmallInteger, default=Source.MQTT)


class Reject(Base):
    """A fix that was refused, with the reason (counted per driver; the raw message is kept for inspection)."""

    __tablename__ = "tracking_rejects"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    driver_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int | None] = mapped_column(BigInteger)  # None when the message had no usable seq
    ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(32))  # tracking.validate.Reason
    source: Mapped[int] = mapped_column(SmallInteger, default=Source.MQTT)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    raw: Mapped[str] = mapped_column(Text, default="")  # the message as received (truncated to 1 kB)


class Link(Base):
    """A customer tracking link: only the SHA-256 of the token is stored, so a dump cannot be replayed."""

    __tablename__ = "tracking_links"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # min(issue + ttl, delivery + grace)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
