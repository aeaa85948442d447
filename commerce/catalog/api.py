"""Catalog routes: category tree, search with facets, product page data (all public)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query

from datetime import UTC, datetime

from commerce import money
from commerce.catalog import service
from commerce.loyalty import service as loyalty
from commerce.catalog.schemas import parse_filters
from core.rbac import Permission
from serena.deps import Db, Principal, SettingsDep, require

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


@router.get("/categories")
async def categories(db: Db, _=require(Permission.PUBLIC)):
    """The category tree."""
    return await service.category_tree(db=db)


@router.get("/search")
async def search(db: Db, settings: SettingsDep, q: str = "", category: str | None = None, f: Annotated[list[str], Query()] = [],  # noqa: B006
                 currency: str = "EUR", price_min: Decimal | None = None, price_max: Decimal | None = None,
                 sort: str = "relevance", page: Annotated[int, Query(ge=1)] = 1,
                 per_page: Annotated[int, Query(ge=1, le=100)] = 24, principal: Principal = require(Permission.PUBLIC)):
    """Full-text search with facet counts (attribute values, categories, price bands).

    Signed-in customers whose loyalty tier has `early_access` also see products still in early access.
    """
    category_id = (await service.get_category(db=db, slug=category)).id if category else None
    early = False
    if not principal.anonymous:
        tier = await loyalty.status(db=db, settings=settings, user_id=principal.user_id, now=datetime.now(UTC))
        early = "early_access" in tier["benefits"]
    res = await service.search(db=db, q=q, category_id=category_id, filters=parse_filters(f), currency=currency,
                               price_min=price_min, price_max=price_max, sort=sort, page=page, per_page=per_page, early_access=early)
    return money.plain({"total": res.total, "items": res.items, "facets": res.facets, "categories": res.categories,
                        "price_bands": res.price_bands, "corrected": res.corrected, "page": page, "per_page": per_page})


@router.get("/products/{slug}")
async def product(slug: str, db: Db, settings: SettingsDep, currency: str = "EUR", _=require(Permission.PUBLIC)):
    """A product with its variants (price in `currency`, units in stock), images and breadcrumb."""
    return money.plain(await service.get_product(db=db, slug=slug, currency=currency,
                                                 storage_base_url=settings.commerce_image_base_url))
