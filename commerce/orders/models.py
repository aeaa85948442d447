"""Order tables: the order with its three separate states, lines with their tax, the timeline, returns, invoices.

Mirrors migration c0001. Status, payment status and delivery status are three fields
because they move independently: an order can be paid and still awaiting dispatch, or
delivered and partially refunded.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, Numeric, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, query_expression
from sqlalchemy.types import DateTime

from core.db import Base


class OrderStatus(StrEnum):
    PLACED = "placed"  # created at checkout, stock held, waiting for its payment to be secured
    CONFIRMED = "confirmed"  # payment secured (or cash on delivery accepted): handed to dispatch
    COMPLETED = "completed"  # delivered
    CANCELLED = "cancelled"  # cancelled before pickup or its payment failed; stock released
    RETURNED = "returned"  # every line came back


class PaymentStatus(StrEnum):
    PENDING = "pending"  # nothing secured yet (card in progress, bank transfer not seen, cash not collected)
    ACTION_REQUIRED = "action_required"  # the customer must authenticate (3-D Secure)
    AUTHORISED = "authorised"  # funds held, not captured
    PAID = "paid"  # charged in full
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    FAILED = "failed"  # declined or authentication failed
    VOIDED = "voided"  # never charged and will not be (order cancelled)


class DeliveryStatus(StrEnum):
    NOT_READY = "not_ready"  # not handed to dispatch yet
    AWAITING_DISPATCH = "awaiting_dispatch"  # order.paid emitted; dispatch owns it now
    OUT_FOR_DELIVERY = "out_for_delivery"  # picked up at the depot (delivery.picked_up heard): no more cancelling
    DELIVERED = "delivered"  # delivery.completed heard
    FAILED = "failed"  # an attempt failed (delivery.failed); dispatch may try again
    RETURNED = "returned"  # given up: the parcel went back to the depot (delivery.returned); refunded, restocked
    CANCELLED = "cancelled"  # never going out


class PaymentMethod(StrEnum):
    CARD = "card"  # Stripe PaymentIntent
    CASH_ON_DELIVERY = "cash_on_delivery"  # the driver collects; settled by the delivery scan
    BANK_TRANSFER = "bank_transfer"  # staff confirm the money arrived


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    number: Mapped[int] = mapped_column(BigInteger, unique=True, server_default=func.nextval("order_number_seq"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    email: Mapped[str] = mapped_column(String(320))
    contact_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(24))
    payment_status: Mapped[str] = mapped_column(String(24))
    delivery_status: Mapped[str] = mapped_column(String(24))
    payment_method: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    prices_include_tax: Mapped[bool] = mapped_column(Boolean)
    subtotal: Mapped[Decimal] = mapped_column(Numeric(12, 2))  # lines' gross before discounts
    discount_total: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    delivery_fee: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    tax_total: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))  # what the customer pays
    points_redeemed: Mapped[int] = mapped_column(Integer, default=0)
    promotion_id: Mapped[int | None] = mapped_column(ForeignKey("promotions.id"))
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(String(64), default="")
    address_text: Mapped[str] = mapped_column(Text)
    country: Mapped[str] = mapped_column(String(2))
    region: Mapped[str] = mapped_column(String(64), default="")
    # Deferred: no Python code reads the geometry (loading it parsed a WKB per order row); the
    # coordinates come as `lat`/`lng` below. Reading `order.location` raises instead of querying.
    location: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), deferred=True,
                                          deferred_raiseload=True)
    # The drop-off's coordinates, filled only by queries that ask for them (orders.service.get,
    # with_expression), None otherwise; orders.service.location_of queries when they are None.
    lat: Mapped[float | None] = query_expression()
    lng: Mapped[float | None] = query_expression()
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("service_zones.id"))
    depot_id: Mapped[int | None] = mapped_column(ForeignKey("depots.id"))
    distance_m: Mapped[int] = mapped_column(Integer, default=0)
    distance_source: Mapped[str] = mapped_column(String(24), default="")  # "road" or "haversine_estimate"
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    weight_kg: Mapped[Decimal] = mapped_column(Numeric(10, 3), default=Decimal("0"))
    volume_l: Mapped[Decimal] = mapped_column(Numeric(10, 3), default=Decimal("0"))
    parcels: Mapped[int] = mapped_column(Integer, default=1)
    skills: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    checkout_key: Mapped[str] = mapped_column(String(160), unique=True)  # the client's Idempotency-Key
    request_hash: Mapped[str] = mapped_column(String(64), default="")  # same key with another body is refused
    cart_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    tracking_token: Mapped[str] = mapped_column(String(64), unique=True)
    invoice_number: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OrderLine(Base):
    """One line as sold: price, tax rate and amounts frozen at checkout."""

    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variants.id"))
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    prices_include_tax: Mapped[bool] = mapped_column(Boolean)
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    discount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    net: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    tax: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    gross: Mapped[Decimal] = mapped_column(Numeric(12, 2))  # net + tax, after the line's discount
    weight_kg: Mapped[Decimal] = mapped_column(Numeric(10, 3), default=Decimal("0"))
    volume_l: Mapped[Decimal] = mapped_column(Numeric(10, 3), default=Decimal("0"))
    returned_quantity: Mapped[int] = mapped_column(Integer, default=0)


class StockReservation(Base):
    __tablename__ = "stock_reservations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    variant_id: Mapped[int] = mapped_column(ForeignKey("product_variants.id"))
    depot_id: Mapped[int] = mapped_column(ForeignKey("depots.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="held")  # held | committed | released
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OrderEvent(Base):
    """The order's timeline as the customer and support see it (append-only)."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    type: Mapped[str] = mapped_column(String(48))
    note: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OrderReturn(Base):
    """A return or exchange moving through requested → approved → received → refunded/exchanged (or rejected)."""

    __tablename__ = "order_returns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"))
    kind: Mapped[str] = mapped_column(String(16))  # return | exchange
    status: Mapped[str] = mapped_column(String(16))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)  # [{"line_id": 1, "quantity": 1, "exchange_variant_id": 7?}]
    reason: Mapped[str] = mapped_column(Text, default="")
    refund_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
