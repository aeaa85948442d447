"""Tables of the shared kernel: identity and RBAC, the fleet's fixed assets, the event bus, the audit log.

Domains add their own tables in their own `models.py`; these are the ones every domain
leans on. Geometry columns are PostGIS (SRID 4326, lng/lat order).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime

from core.db import Base, Timestamped


class User(Timestamped, Base):
    """A person who signs in: customer, driver or staff. Roles come from user_roles."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # TOTP secret is stored only once confirmed by a valid code; pending one lives in totp_pending.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_pending: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # replay guard: last accepted time step

    roles: Mapped[list[UserRole]] = relationship(lazy="selectin", cascade="all, delete-orphan")

    @property
    def role_names(self) -> set[str]:
        return {r.role for r in self.roles}


class RoleRow(Base):
    """Mirror of core.rbac.Role (synced from code)."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)


class PermissionRow(Base):
    """Mirror of core.rbac.Permission (synced from code)."""

    __tablename__ = "permissions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role: Mapped[str] = mapped_column(ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(ForeignKey("permissions.name", ondelete="CASCADE"), primary_key=True)


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(ForeignKey("roles.name"), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RefreshToken(Timestamped, Base):
    """A refresh token (stored hashed). Rotation keeps a family; reuse of a rotated token revokes the family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # used once: replaced by a child
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mfa: Mapped[bool] = mapped_column(Boolean, default=False)  # second factor given at this family's sign-in


class Staff(Timestamped, Base):
    """Back-office profile of a staff user (dispatcher, support, marketing, admin)."""

    __tablename__ = "staff"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    title: Mapped[str] = mapped_column(String(100), default="")
    region: Mapped[str | None] = mapped_column(String(64))


class Depot(Timestamped, Base):
    """A place where parcels are picked up and vehicles start their shifts."""

    __tablename__ = "depots"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    location: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=True))
    address: Mapped[str] = mapped_column(Text, default="")


class Vehicle(Timestamped, Base):
    """A van, bike or car, with capacity per dimension and the skills it offers (cold chain, ...)."""

    __tablename__ = "vehicles"
    __table_args__ = (
        CheckConstraint("capacity_weight_kg >= 0 AND capacity_volume_l >= 0 AND capacity_parcels >= 0", name="capacity_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    plate: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(32), default="van")
    capacity_weight_kg: Mapped[float] = mapped_column(Float, default=800.0)
    capacity_volume_l: Mapped[float] = mapped_column(Float, default=6000.0)
    capacity_parcels: Mapped[int] = mapped_column(Integer, default=120)
    skills: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    depot_id: Mapped[int | None] = mapped_column(ForeignKey("depots.id"))


class Driver(Timestamped, Base):
    """A driver: a user with broker credentials of their own (the broker ACL is generated from this table)."""

    __tablename__ = "drivers"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    phone: Mapped[str] = mapped_column(String(32), default="")
    vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id"))
    depot_id: Mapped[int | None] = mapped_column(ForeignKey("depots.id"))
    # Mosquitto PBKDF2-SHA512 hash ($7$...) of the driver's broker password; the clear password is
    # shown once when issued. The broker's password file is generated from these rows.
    mqtt_password_hash: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ServiceZone(Timestamped, Base):
    """A polygon the platform delivers into, with its pricing; indexed by an H3 cover for lookups."""

    __tablename__ = "service_zones"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(32), default="delivery")  # delivery | depot | dropoff
    area: Mapped[Any] = mapped_column(Geometry("MULTIPOLYGON", srid=4326, spatial_index=True))
    base_fee: Mapped[str] = mapped_column(String(32), default="0.00")  # Decimal as text; currency below
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    h3_resolution: Mapped[int | None] = mapped_column(Integer)
    h3_cover: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class OutboxEvent(Base):
    """An event written in the same transaction as the state change it describes (transactional outbox)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_unrelayed", "id", postgresql_where="relayed_at IS NULL"),
        Index("ix_outbox_relayed_at", "relayed_at", "id", postgresql_where="relayed_at IS NOT NULL"),  # migration 0002
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(String(64))
    aggregate: Mapped[str] = mapped_column(String(64), default="")
    aggregate_id: Mapped[str] = mapped_column(String(64), default="")
    payload: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    relayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProcessedEvent(Base):
    """Idempotency record: consumer `consumer` has applied event `event_id` (inserted with the effect)."""

    __tablename__ = "processed_events"
    # Pruning (core.consumer.prune_processed) walks one group's oldest rows; migration 0003.
    __table_args__ = (Index("ix_processed_events_consumer_processed_at", "consumer", "processed_at"),)

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditEntry(Base):
    """Append-only, hash-chained record of a staff action (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    actor_email: Mapped[str] = mapped_column(String(320), default="")
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict | None] = mapped_column(JSONB)
    after: Mapped[dict | None] = mapped_column(JSONB)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
