"""Dispatch tables: delivery jobs and their transitions, plans, shifts, scans with proof, exceptions.

A job's state is separate from the order's (commerce never sees these tables; it hears
`delivery.*` events). Transitions, scans and plans are append-only histories: the job row
holds the current state, the history says how it got there.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Identity, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import DateTime

from core.db import Base


class JobState(StrEnum):
    CREATED = "created"  # accepted, not yet in a plan
    PLANNED = "planned"  # in the current plan, driver not yet told
    ASSIGNED = "assigned"  # on a driver's task list (sent, version acknowledged or not)
    PICKED_UP = "picked_up"  # pickup scan at the depot accepted
    OUT_FOR_DELIVERY = "out_for_delivery"  # the driver left for this stop (it is next)
    ARRIVING = "arriving"  # driver within the arrival radius / ETA of the stop
    DELIVERED = "delivered"  # delivery scan + proof accepted (terminal)
    FAILED = "failed"  # attempt failed (customer absent, refused, address wrong); re-attempt or return
    RETURNED = "returned"  # parcel back at the depot (terminal)
    CANCELLED = "cancelled"  # cancelled before pickup (terminal)


TERMINAL = frozenset({JobState.DELIVERED, JobState.RETURNED, JobState.CANCELLED})
# States in which the job still needs planning (not on a vehicle yet).
UNSTARTED = frozenset({JobState.CREATED, JobState.PLANNED, JobState.ASSIGNED})


class DeliveryJob(Base):
    __tablename__ = "delivery_jobs"
    __table_args__ = (
        Index("ix_delivery_jobs_open", "state", postgresql_where="state NOT IN ('delivered','returned','cancelled')"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)  # order id for order.paid, caller's key for the API
    source: Mapped[str] = mapped_column(String(16))  # order | api
    request_sha256: Mapped[str] = mapped_column(String(64))  # same key with another request is refused
    reference: Mapped[str] = mapped_column(String(64), default="")  # order number or caller's reference
    package_code: Mapped[str] = mapped_column(String(32), unique=True)  # printed on the label (QR + Code 128)
    state: Mapped[str] = mapped_column(String(20), default=JobState.CREATED.value)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    depot_id: Mapped[int | None] = mapped_column(ForeignKey("depots.id"))
    pickup: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    dropoff: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    address: Mapped[str] = mapped_column(Text, default="")
    recipient_name: Mapped[str] = mapped_column(String(200), default="")
    recipient_phone: Mapped[str] = mapped_column(String(32), default="")
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    service_s: Mapped[float] = mapped_column(Float, default=120.0)
    weight_kg: Mapped[float] = mapped_column(Float, default=1.0)
    volume_l: Mapped[float] = mapped_column(Float, default=5.0)
    parcels: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    skills: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    driver_id: Mapped[int | None] = mapped_column(ForeignKey("drivers.id"))
    plan_version: Mapped[int | None] = mapped_column(BigInteger)
    sequence: Mapped[int | None] = mapped_column(Integer)  # position on the driver's route
    eta: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_otp_hash: Mapped[str | None] = mapped_column(String(64))  # one-time code the customer gives
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class JobTransition(Base):
    """Append-only history of a job's states."""

    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("delivery_jobs.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(64), default="")  # user id, "planner", "system"
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Plan(Base):
    """One version of a region's plan: routes with per-stop ETAs, as solved."""

    __tablename__ = "dispatch_plans"

    version: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    region: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(String(64))  # what triggered it
    planner_id: Mapped[str] = mapped_column(String(64))
    routes: Mapped[dict] = mapped_column(JSONB)  # {driver_id: [{job_id, kind, eta, ...}]}
    unassigned: Mapped[dict] = mapped_column(JSONB)  # {job_id: reason}
    objective: Mapped[float] = mapped_column(Float)
    churn: Mapped[float] = mapped_column(Float, default=0.0)
    solve_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TaskListAck(Base):
    """A driver app acknowledged a task-list version."""

    __tablename__ = "task_list_acks"

    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Shift(Base):
    """A driver's on-duty period."""

    __tablename__ = "driver_shifts"
    __table_args__ = (Index("uq_driver_shifts_open", "driver_id", unique=True, postgresql_where="ended_at IS NULL"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id", ondelete="CASCADE"))
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    start_lat: Mapped[float | None] = mapped_column(Float)
    start_lng: Mapped[float | None] = mapped_column(Float)


class CustodyRecord(Base):
    """Chain of custody: each scan (and its proof) hash-chained per job, so no record can be altered unnoticed."""

    __tablename__ = "custody_records"
    __table_args__ = (UniqueConstraint("job_id", "prev_hash", name="uq_custody_records_job_prev"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("delivery_jobs.id", ondelete="CASCADE"), index=True)
    driver_id: Mapped[int | None] = mapped_column(ForeignKey("drivers.id"))
    kind: Mapped[str] = mapped_column(String(20))  # pickup_scan | delivery_scan | proof | failed | returned
    code: Mapped[str] = mapped_column(String(64), default="")
    lat: Mapped[float | None] = mapped_column(Float)
    lng: Mapped[float | None] = mapped_column(Float)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    inside_geofence: Mapped[bool | None] = mapped_column(Boolean)
    override_reason: Mapped[str] = mapped_column(Text, default="")
    proof_kind: Mapped[str] = mapped_column(String(16), default="")  # photo | signature | otp
    proof_sha256: Mapped[str] = mapped_column(String(64), default="")
    proof_key: Mapped[str] = mapped_column(Text, default="")  # object-storage key
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class DispatchException(Base):
    """Something a dispatcher should look at, with a suggested action."""

    __tablename__ = "dispatch_exceptions"
    __table_args__ = (Index("uq_dispatch_exceptions_open", "kind", "subject", unique=True, postgresql_where="resolved_at IS NULL"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # late_risk | off_route | silent_driver | scan_refused | geofence_override
    subject: Mapped[str] = mapped_column(String(64))  # job id or driver id it is about
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    driver_id: Mapped[int | None] = mapped_column(Integer)
    risk: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1, risk to the promise; ranks the list
    detail: Mapped[str] = mapped_column(Text, default="")
    suggested_action: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
