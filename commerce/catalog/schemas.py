"""Pydantic shapes of the catalog API (answers are plain dicts with money as strings; see commerce.money.plain)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field


class SearchQuery(BaseModel):
    q: str = Field("", max_length=200)
    category: str | None = None  # category slug; its whole subtree matches
    f: list[str] = []  # "colour:red" (repeat for more; same key = any of, different keys = all of)
    currency: str = "EUR"
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    sort: str = "relevance"  # relevance | price_asc | price_desc | newest
    page: int = Field(1, ge=1)
    per_page: int = Field(24, ge=1, le=100)


def parse_filters(f: list[str]) -> dict[str, list[str]]:
    """["colour:red", "colour:blue", "size:M"] → {"colour": ["red", "blue"], "size": ["M"]}."""
    out: dict[str, list[str]] = {}
    for item in f:
        key, sep, value = item.partition(":")
        if sep and key and value:
            out.setdefault(key, []).append(value)
    return out
