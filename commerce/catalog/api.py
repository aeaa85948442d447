"""Catalog routes: category tree, search with facets, product page data (all public)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from datetime import UTC, datetime

from commerce import money
from commerce.catalog import cache, service
from commerce.loyalty import service as loyalty
from commerce.catalog.schemas import parse_filters
from commerce.deps import AppSettings
from core.rbac import Permission
from serena.deps import Principal, require

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def _session(request: Request):
    """A read-only session for a cache miss (a hit opens none: no `Db` dependency on the cached routes)."""
    return request.app.state.sessions()


@router.get("/categories")
async def categories(request: Request, _=require(Permission.PUBLIC)):
    """The category tree."""
    async def render():
        async with _session(request) as db:
            return orjson.dumps(await service.category_tree(db=db)), None

    return _json(await cache.cache_for(request.app).get("categories", render))


@router.get("/search")
async def search(request: Request, settings: AppSettings, q: str = "", category: str | None = None, f: Annotated[list[str], Query()] = [],  # noqa: B006
                 currency: str = "EUR", price_min: Decimal | None = None, price_max: Decimal | None = None,
                 sort: str = "relevance", page: Annotated[int, Query(ge=1)] = 1,
                 per_page: Annotated[int, Query(ge=1, le=100)] = 24, principal: Principal = require(Permission.PUBLIC)):
    """Full-text search with facet counts (attribute values, categories, price bands).

    Signed-in customers whose loyalty tier has `early_access` also see products still in early access.
    """
    async def render(db, early: bool) -> bytes:  # noqa: ANN001
        category_id = (await service.get_category(db=db, slug=category)).id if category else None
        res = await service.search(db=db, q=q, category_id=category_id, filters=parse_filters(f), currency=currency,
                                   price_min=price_min, price_max=price_max, sort=sort, page=page, per_page=per_page,
                                   early_access=early)
        return orjson.dumps(money.plain({"total": res.total, "items": res.items, "facets": res.facets,
                                         "categories": res.categories, "price_bands": res.price_bands,
                                         "corrected": res.corrected, "page": page, "per_page": per_page}))

    if not principal.anonymous:  # an early-access tier sees other products: rendered per request, not cached
        async with _session(request) as db, db.begin():
            tier = await loyalty.status(db=db, settings=settings, user_id=principal.user_id, now=datetime.now(UTC))
            return _json(await render(db, "early_access" in tier["benefits"]))

    async def render_anonymous():
        async with _session(request) as db, db.begin():  # search sets `SET LOCAL jit = off`: inside a transaction
            return await render(db, False), await service.seconds_until_early_access_ends(db=db)

    key = "search?" + str(request.query_params)  # as sent: two spellings of one query are two entries, never a wrong one
    return _json(await cache.cache_for(request.app).get(key, render_anonymous))


@router.get("/products/{slug}")
async def product(request: Request, slug: str, settings: AppSettings, currency: str = "EUR", _=require(Permission.PUBLIC)):
    """A product with its variants (price in `currency`, units in stock), images and breadcrumb."""
    async def render():
        async with _session(request) as db:
            page = money.plain(await service.get_product_page(db=db, slug=slug, currency=currency,
                                                              storage_base_url=settings.commerce_image_base_url))
        return page, None

    # The page comes from the cache; units in stock are read live (checkouts change them all the time).
    page = await cache.cache_for(request.app).get(f"product:{slug}:{currency}", render)
    stock = await service.available_stock_now(pool=request.app.state.pg_pool, variant_ids=[v["id"] for v in page["variants"]])
    return _json(orjson.dumps(service.with_stock(page, stock)))
