"""Pydantic shapes of the checkout API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field


class QuoteIn(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    currency: str | None = Field(None, min_length=3, max_length=3)


class CheckoutIn(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str = Field(min_length=1, max_length=200)
    phone: str = Field("", max_length=32)
    address: str = Field(min_length=3, max_length=500)  # the address as text, for the driver
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    country: str = Field("FI", min_length=2, max_length=2)
    region: str = Field("", max_length=64)
    window_start: datetime  # one of the quote's windows
    payment_method: str = "card"  # card | cash_on_delivery | bank_transfer
    payment_method_id: str | None = Field(None, max_length=128)  # card token from the payment form (pm_...)
    coupon: str | None = Field(None, max_length=64)
    points: int = Field(0, ge=0)
    expected_total: Decimal | None = None
