"""Pydantic shapes of the promotions API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field


class PromotionCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(pattern="^(percentage|fixed|free_delivery)$")
    value: Decimal = Field(Decimal("0"), ge=0)
    code: str | None = Field(None, min_length=3, max_length=64)
    currency: str | None = Field(None, min_length=3, max_length=3)
    min_spend: Decimal | None = Field(None, ge=0)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    global_cap: int | None = Field(None, gt=0)
    per_customer_cap: int | None = Field(None, gt=0)
    campaign_id: str = Field("", max_length=64)
