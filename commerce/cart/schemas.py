"""Pydantic shapes of the cart API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CartCreate(BaseModel):
    currency: str | None = Field(None, min_length=3, max_length=3)


class LineSet(BaseModel):
    quantity: int = Field(ge=0, le=99)


class Merge(BaseModel):
    guest_token: str = Field(min_length=8, max_length=64)
