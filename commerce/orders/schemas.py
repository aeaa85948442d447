"""Pydantic shapes of the order API."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field


class CancelIn(BaseModel):
    reason: str = Field("cancelled by customer", max_length=500)


class ReturnItem(BaseModel):
    line_id: int
    quantity: int = Field(gt=0)
    exchange_variant_id: int | None = None


class ReturnIn(BaseModel):
    kind: str = Field(pattern="^(return|exchange)$")
    items: list[ReturnItem] = Field(min_length=1)
    reason: str = Field("", max_length=500)


class RefundIn(BaseModel):
    amount: Decimal | None = Field(None, gt=0)  # None: everything still refundable
    reason: str = Field("support", max_length=64)


class BankTransferIn(BaseModel):
    reference: str = Field(min_length=1, max_length=140)


class ReturnStep(BaseModel):
    to: str = Field(pattern="^(approved|rejected|received)$")
