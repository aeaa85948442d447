"""Promotion tables: coupons and automatic promotions, and who redeemed them on which order."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, Numeric, String, func
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import DateTime

from core.db import Base


class Promotion(Base):
    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str | None] = mapped_column(String(64), unique=True)  # None: not a coupon
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # percentage | fixed | free_delivery
    value: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))  # percent, or amount in `currency`
    currency: Mapped[str | None] = mapped_column(String(3))  # for fixed amounts and min_spend
    min_spend: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    global_cap: Mapped[int | None] = mapped_column(Integer)
    per_customer_cap: Mapped[int | None] = mapped_column(Integer)
    redemptions: Mapped[int] = mapped_column(Integer, default=0)
    campaign_id: Mapped[str] = mapped_column(String(64), default="")  # kept on orders for ROI reports
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Redemption(Base):
    __tablename__ = "promotion_redemptions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    promotion_id: Mapped[int] = mapped_column(ForeignKey("promotions.id"))
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), unique=True)
    customer_key: Mapped[str] = mapped_column(String(320))  # user id, or the guest's e-mail in lower case
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    voided: Mapped[bool] = mapped_column(Boolean, default=False)  # the order was cancelled before payment
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
