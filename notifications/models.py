"""Notification tables: messages and their delivery state, webhook endpoints and their delivery log, contacts, preferences.

A `Notification` row is written by the event consumer in the event's own transaction
(unique on event, channel, recipient, so a redelivered event adds nothing) and moved
through its states by the Celery send task. Contacts are notifications' own copy of who
to tell about an order (taken from `order.paid`): delivery events carry no customer
details, and this room may not ask commerce (it reacts to events only).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class State(StrEnum):
    QUEUED = "queued"  # written, waiting for a send task (first attempt or a retry after back-off)
    SENDING = "sending"  # a task claimed it and is talking to the channel right now
    SENT = "sent"  # the channel accepted it (SMTP 250, webhook 2xx, file written)
    FAILED = "failed"  # given up: permanent refusal, attempts exhausted, or outcome unknown on a non-idempotent channel
    SUPPRESSED = "suppressed"  # never sent: the recipient opted out (kept so support can see why nothing arrived)


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"


class Category(StrEnum):
    TRANSACTIONAL = "transactional"  # about an order the customer placed: sent unless they opted out of the channel
    MARKETING = "marketing"  # anything else: sent only after an explicit opt-in


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", "recipient", name="uq_notifications_event_channel_recipient"),
        Index("ix_notifications_state_next", "state", "next_attempt_at"),
        Index("ix_notifications_created_at", "created_at"),
        Index("ix_notifications_order_id", "order_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))  # e-mail address, phone number, or "endpoint:<id>"
    kind: Mapped[str] = mapped_column(String(32))  # template name: order_confirmed, arriving_soon, ... or "webhook"
    category: Mapped[str] = mapped_column(String(16), default=Category.TRANSACTIONAL.value)
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    endpoint_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("webhook_endpoints.id"), nullable=True)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    subject: Mapped[str] = mapped_column(Text, default="")
    body_text: Mapped[str] = mapped_column(Text, default="")  # e-mail text part, SMS text, or the webhook's JSON body
    body_html: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=State.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # send attempts started (a claim counts one)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sending_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(128))  # who receives (a partner, a shop system): free text
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))  # HMAC-SHA256 key; shown once at creation, needed to sign
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))  # fnmatch patterns: "delivery.*", "order.paid"
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # soft delete: the log keeps its endpoint


class WebhookDelivery(Base):
    """One POST to a webhook endpoint: the delivery log (append-only)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    notification_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("notifications.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no HTTP answer (refused, timeout)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[float] = mapped_column(Float)
    retry_in_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # the back-off chosen after this attempt; None = no retry
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Contact(Base):
    """Who to tell about an order, as `order.paid` described it."""

    __tablename__ = "notification_contacts"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_number: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)  # lower case
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    tracking_token: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # failed delivery attempts so far
    arriving_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)  # attempt an "arriving soon" went out for
    eta_earliest: Mapped[str | None] = mapped_column(String(40), nullable=True)  # from eta.changed, ISO 8601
    eta_latest: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Preference(Base):
    """A recipient's choice for a channel ("*" = all) and category: opted out, or (marketing) opted in."""

    __tablename__ = "notification_preferences"

    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)  # e-mail (lower case) or phone
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    category: Mapped[str] = mapped_column(String(16), primary_key=True)
    opted_out: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
