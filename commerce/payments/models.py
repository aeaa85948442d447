"""Payment tables: a transaction per payment attempt with amounts per bucket, its append-only event list, refunds, webhook receipts."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Numeric, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import DateTime

from core.db import Base


class TxStatus(StrEnum):
    CREATED = "created"  # row written, provider not called yet (or the call's answer was lost)
    SUBMITTING = "submitting"  # one checkout request is calling the provider now (claimed at updated_at; no lock held)
    ACTION_REQUIRED = "action_required"  # 3-D Secure: the customer must authenticate
    PROCESSING = "processing"  # the provider is working on it
    AUTHORISED = "authorised"  # funds held, not captured
    SUCCEEDED = "succeeded"  # charged
    FAILED = "failed"  # declined / authentication failed
    CANCELED = "canceled"  # abandoned before any charge
    PENDING_OFFLINE = "pending_offline"  # cash on delivery or bank transfer, not settled yet


class PaymentTransaction(Base):
    __tablename__ = "payment_transactions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    provider: Mapped[str] = mapped_column(String(24))  # stripe | cash | bank_transfer
    provider_ref: Mapped[str | None] = mapped_column(String(128), unique=True)  # PaymentIntent id
    method: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))  # asked for
    authorised: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    charged: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    refunded: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    status: Mapped[str] = mapped_column(String(24))
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)  # also sent to the provider
    client_secret: Mapped[str | None] = mapped_column(Text)  # for the browser's 3-D Secure step
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PaymentEvent(Base):
    """What the provider told us, in arrival order, keyed by its reference (append-only)."""

    __tablename__ = "payment_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    transaction_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_transactions.id"))
    provider_ref: Mapped[str] = mapped_column(String(128))
    provider_event_id: Mapped[str | None] = mapped_column(String(128), unique=True)  # webhook event id (evt_...)
    type: Mapped[str] = mapped_column(String(48))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    transaction_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_transactions.id"))
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    reason: Mapped[str] = mapped_column(String(64), default="")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookReceipt(Base):
    """Replay protection: a provider event id is processed once, whatever the number of deliveries."""

    __tablename__ = "webhook_receipts"

    provider: Mapped[str] = mapped_column(String(24), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())



