"""Catalog use cases: build the tree and products, read a product, search with facets, stock per depot.

Search is one SQL round trip: a materialised CTE of the matching products, from which
the page, the total, the facet counts (unnest of the `facets` token array) and the price
bands are all aggregated. Full text uses the stored tsvector with `ts_rank_cd`; when the
words match nothing, the query is retried as trigram word similarity on the name (typo
tolerance) and the result says so (`corrected`). We chose "fallback when empty" over
always OR-ing both: the OR makes every search pay for the trigram scan and ranks fuzzy
matches among exact ones.

Facet counts are computed over the products that match every selected filter
(conjunctive counts), which is what the counts next to each value promise: "this many
if you also tick this".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from commerce import money
from commerce.catalog.models import Category, Product, ProductImage, ProductType, Stock, Variant, VariantPrice
from core.errors import NotFound, ValidationFailed

# Price band edges (in the currency searched); the last band is open-ended.
PRICE_BANDS: tuple[Decimal, ...] = tuple(Decimal(x) for x in ("0", "10", "25", "50", "100", "250"))
TRGM_WORD_THRESHOLD = 0.45  # word_similarity above which a misspelt word still matches a name
MAX_PER_PAGE = 100


# --- building the catalog -------------------------------------------------------------------


async def create_category(*, db: AsyncSession, name: str, slug: str, parent_id: int | None = None,
                          position: int = 0) -> Category:
    """Add a category under `parent_id` (None: a root)."""
    parent_path: list[int] = []
    if parent_id is not None:
        parent = await db.get(Category, parent_id)
        if parent is None:
            raise NotFound(f"category {parent_id} not found")
        parent_path = list(parent.path)
    cat = Category(name=name, slug=slug, parent_id=parent_id, position=position)
    db.add(cat)
    await db.flush()
    cat.path = [*parent_path, cat.id]
    await db.flush()
    return cat


async def create_product_type(*, db: AsyncSession, name: str, attributes: list[dict[str, Any]]) -> ProductType:
    """A product type with its typed attributes ({"code", "name", "type": choice|text|number, "values"?})."""
    for attr in attributes:
        if attr.get("type") not in ("choice", "text", "number"):
            raise ValidationFailed(f"attribute {attr.get('code')!r}: type must be choice, text or number")
    pt = ProductType(name=name, attributes=attributes)
    db.add(pt)
    await db.flush()
    return pt


def _check_attributes(pt: ProductType, values: dict[str, Any]) -> dict[str, Any]:
    spec = {a["code"]: a for a in pt.attributes}
    out: dict[str, Any] = {}
    for code, value in values.items():
        attr = spec.get(code)
        if attr is None:
            raise ValidationFailed(f"product type {pt.name!r} has no attribute {code!r}")
        if attr["type"] == "choice" and attr.get("values") and value not in attr["values"]:
            raise ValidationFailed(f"{code}={value!r} is not one of {attr['values']}")
        if attr["type"] == "number":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValidationFailed(f"{code} must be a number") from None
        out[code] = value
    return out


@dataclass
class VariantIn:
    sku: str
    prices: dict[str, Decimal]  # currency → amount
    weight_kg: Decimal = Decimal("0")
    volume_l: Decimal = Decimal("0")
    attributes: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    includes_tax: bool = True
    stock: dict[int, int] = field(default_factory=dict)  # depot id → units


async def create_product(*, db: AsyncSession, type_id: int, category_id: int, name: str, slug: str,
                         variants: list[VariantIn], description: str = "", brand: str = "",
                         attributes: dict[str, Any] | None = None, tax_class: str = "standard",
                         skills: list[str] | None = None, images: list[tuple[str, str]] | None = None,
                         early_access_until: datetime | None = None) -> Product:
    """A product with its variants, prices, stock and image keys; search fields filled in."""
    pt = await db.get(ProductType, type_id)
    if pt is None:
        raise NotFound(f"product type {type_id} not found")
    if not variants:
        raise ValidationFailed("a product needs at least one variant")
    product = Product(type_id=type_id, category_id=category_id, name=name, slug=slug, description=description,
                      brand=brand, attributes=_check_attributes(pt, attributes or {}), tax_class=tax_class,
                      skills=list(skills or []), early_access_until=early_access_until)
    db.add(product)
    await db.flush()
    for v in variants:
        variant = Variant(product_id=product.id, sku=v.sku, name=v.name, attributes=_check_attributes(pt, v.attributes),
                          weight_kg=Decimal(v.weight_kg), volume_l=Decimal(v.volume_l))
        db.add(variant)
        await db.flush()
        for currency, amount in v.prices.items():
            cur = money.check_currency(currency)
            db.add(VariantPrice(variant_id=variant.id, currency=cur, amount=money.round_money(amount, cur),
                                includes_tax=v.includes_tax))
        for depot_id, units in v.stock.items():
            db.add(Stock(variant_id=variant.id, depot_id=depot_id, quantity=units))
    for pos, (key, alt) in enumerate(images or []):
        db.add(ProductImage(product_id=product.id, storage_key=key, alt=alt, position=pos))
    await db.flush()
    await refresh_search_fields(db=db, product_ids=[product.id])
    return product


async def refresh_search_fields(*, db: AsyncSession, product_ids: list[int] | None = None) -> None:
    """Recompute the denormalised `prices` and `facets` of products (all when `product_ids` is None)."""
    where = "WHERE p.id = ANY(:ids)" if product_ids is not None else ""
    await db.execute(text(f"""
        UPDATE products p SET
          prices = coalesce((
              SELECT jsonb_object_agg(currency, min_amount::text) FROM (
                  SELECT vp.currency, min(vp.amount) AS min_amount
                  FROM product_variants v JOIN variant_prices vp ON vp.variant_id = v.id
                  WHERE v.product_id = p.id AND v.active GROUP BY vp.currency) m), '{{}}'),
          facets = ARRAY(SELECT DISTINCT t FROM (
              SELECT 'cat:' || c AS t FROM catalog_categories cc, unnest(cc.path) c WHERE cc.id = p.category_id
              UNION ALL SELECT 'brand:' || p.brand WHERE p.brand <> ''
              UNION ALL SELECT key || ':' || value FROM jsonb_each_text(p.attributes)
              UNION ALL SELECT a.key || ':' || a.value FROM product_variants v, jsonb_each_text(v.attributes) a
                        WHERE v.product_id = p.id AND v.active
          ) tokens ORDER BY t)
        {where}
    """), {"ids": product_ids} if product_ids is not None else {})


async def set_stock(*, db: AsyncSession, variant_id: int, depot_id: int, quantity: int) -> None:
    """Set the available units of a variant at a depot (inventory count)."""
    await db.execute(text("""
        INSERT INTO stock (variant_id, depot_id, quantity) VALUES (:v, :d, :q)
        ON CONFLICT (variant_id, depot_id) DO UPDATE SET quantity = EXCLUDED.quantity
    """), {"v": variant_id, "d": depot_id, "q": quantity})


# --- reading --------------------------------------------------------------------------------


async def category_tree(*, db: AsyncSession) -> list[dict[str, Any]]:
    """Every category as nested dicts {id, slug, name, children}."""
    rows = (await db.execute(select(Category).order_by(Category.position, Category.name))).scalars().all()
    nodes = {c.id: {"id": c.id, "slug": c.slug, "name": c.name, "children": []} for c in rows}
    roots = []
    for c in rows:
        (nodes[c.parent_id]["children"] if c.parent_id in nodes else roots).append(nodes[c.id])
    return roots


async def get_category(*, db: AsyncSession, slug: str) -> Category:
    cat = (await db.execute(select(Category).where(Category.slug == slug))).scalar_one_or_none()
    if cat is None:
        raise NotFound(f"category {slug!r} not found")
    return cat


async def breadcrumb(*, db: AsyncSession, category: Category) -> list[Category]:
    rows = (await db.execute(select(Category).where(Category.id.in_(category.path)))).scalars().all()
    by_id = {c.id: c for c in rows}
    return [by_id[i] for i in category.path if i in by_id]


async def get_product(*, db: AsyncSession, slug: str, currency: str, storage_base_url: str = "/media/") -> dict[str, Any]:
    """A product page's data: product, type attributes, variants with price and stock, images, breadcrumb."""
    product = (await db.execute(select(Product).where(Product.slug == slug, Product.published))).scalar_one_or_none()
    if product is None:
        raise NotFound(f"product {slug!r} not found")
    cur = money.check_currency(currency)
    pt = await db.get(ProductType, product.type_id)
    cat = await db.get(Category, product.category_id)
    rows = (await db.execute(
        select(Variant, VariantPrice.amount, VariantPrice.includes_tax,
               select(func.coalesce(func.sum(Stock.quantity), 0)).where(Stock.variant_id == Variant.id).scalar_subquery())
        .outerjoin(VariantPrice, (VariantPrice.variant_id == Variant.id) & (VariantPrice.currency == cur))
        .where(Variant.product_id == product.id, Variant.active).order_by(Variant.id)
    )).all()
    images = (await db.execute(select(ProductImage).where(ProductImage.product_id == product.id)
                               .order_by(ProductImage.position))).scalars().all()
    return {
        "id": product.id, "slug": product.slug, "name": product.name, "description": product.description,
        "brand": product.brand, "attributes": product.attributes, "tax_class": product.tax_class,
        "skills": product.skills, "currency": cur,
        "type": {"name": pt.name, "attributes": pt.attributes} if pt else None,
        "breadcrumb": [{"slug": c.slug, "name": c.name} for c in await breadcrumb(db=db, category=cat)] if cat else [],
        "variants": [
            {"id": v.id, "sku": v.sku, "name": v.name, "attributes": v.attributes, "weight_kg": v.weight_kg,
             "volume_l": v.volume_l, "price": amount, "includes_tax": inc, "in_stock": int(units or 0)}
            for v, amount, inc, units in rows
        ],
        "images": [{"url": storage_base_url + i.storage_key, "alt": i.alt} for i in images],
    }


@dataclass
class SearchResult:
    total: int
    items: list[dict[str, Any]]
    facets: dict[str, list[dict[str, Any]]]
    categories: list[dict[str, Any]]
    price_bands: list[dict[str, Any]]
    corrected: bool  # True when the words matched nothing and the typo-tolerant search answered


def _band_sql() -> str:
    parts = []
    for i, lo in enumerate(PRICE_BANDS):
        hi = PRICE_BANDS[i + 1] if i + 1 < len(PRICE_BANDS) else None
        cond = f"price >= {lo}" + (f" AND price < {hi}" if hi is not None else "")
        parts.append(f"WHEN {cond} THEN {i}")
    return "CASE " + " ".join(parts) + " END"


async def search(*, db: AsyncSession, q: str = "", category_id: int | None = None,
                 filters: dict[str, list[str]] | None = None, currency: str = "EUR",
                 price_min: Decimal | None = None, price_max: Decimal | None = None, sort: str = "relevance",
                 page: int = 1, per_page: int = 24, early_access: bool = False) -> SearchResult:
    """Full-text search with facet counts per attribute value, category and price band."""
    cur = money.check_currency(currency)
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    page = max(1, page)
    q = q.strip()[:200]
    result = await _search_once(db, q=q, typo=False, category_id=category_id, filters=filters or {}, cur=cur,
                                price_min=price_min, price_max=price_max, sort=sort, page=page, per_page=per_page,
                                early_access=early_access)
    if result.total == 0 and q:
        result = await _search_once(db, q=q, typo=True, category_id=category_id, filters=filters or {}, cur=cur,
                                    price_min=price_min, price_max=price_max, sort=sort, page=page,
                                    per_page=per_page, early_access=early_access)
        result.corrected = result.total > 0
    return result


async def _search_once(db: AsyncSession, *, q: str, typo: bool, category_id: int | None,
                       filters: dict[str, list[str]], cur: str, price_min: Decimal | None,
                       price_max: Decimal | None, sort: str, page: int, per_page: int,
                       early_access: bool) -> SearchResult:
    where = ["p.published"]
    params: dict[str, Any] = {"cur": cur, "limit": per_page, "offset": (page - 1) * per_page}
    rank = "0::real"
    if not early_access:
        where.append("(p.early_access_until IS NULL OR p.early_access_until <= now())")
    if q and not typo:
        where.append("p.search @@ websearch_to_tsquery('english', :q)")
        rank = "ts_rank_cd(p.search, websearch_to_tsquery('english', :q))"
        params["q"] = q
    elif q:
        # SET LOCAL: the threshold holds for this transaction only.
        await db.execute(text(f"SET LOCAL pg_trgm.word_similarity_threshold = {TRGM_WORD_THRESHOLD}"))
        where.append(":q <% p.name")
        rank = "word_similarity(:q, p.name)"
        params["q"] = q
    tokens: list[str] = []
    if category_id is not None:
        tokens.append(f"cat:{category_id}")
    for i, (key, values) in enumerate(sorted(filters.items())):
        vals = [f"{key}:{v}" for v in values if v]
        if len(vals) == 1:
            tokens.extend(vals)
        elif vals:
            where.append(f"p.facets && CAST(:any{i} AS text[])")  # any of the values of one attribute
            params[f"any{i}"] = vals
    if tokens:
        where.append("p.facets @> CAST(:all AS text[])")  # every selected attribute
        params["all"] = tokens
    price = "(p.prices ->> :cur)::numeric"
    where.append(f"{price} IS NOT NULL")
    if price_min is not None:
        where.append(f"{price} >= :pmin")
        params["pmin"] = price_min
    if price_max is not None:
        where.append(f"{price} <= :pmax")
        params["pmax"] = price_max
    order = {
        "price_asc": "price ASC, id",
        "price_desc": "price DESC, id",
        "newest": "id DESC",
    }.get(sort, "rank DESC, id")
    sql = f"""
        WITH matched AS MATERIALIZED (
            SELECT p.id, p.slug, p.name, p.brand, {price} AS price, p.facets, {rank} AS rank
            FROM products p WHERE {' AND '.join(where)}
        ),
        page AS (SELECT id, slug, name, brand, price, rank FROM matched ORDER BY {order} LIMIT :limit OFFSET :offset),
        facet AS (SELECT t, count(*) AS n FROM matched, unnest(facets) t GROUP BY t),
        band AS (SELECT {_band_sql().replace('price', 'm.price')} AS b, count(*) AS n FROM matched m GROUP BY 1)
        SELECT (SELECT count(*) FROM matched) AS total,
               (SELECT coalesce(json_agg(page ORDER BY {order.replace('rank', 'page.rank')}), '[]') FROM page) AS items,
               (SELECT coalesce(json_agg(json_build_array(t, n)), '[]') FROM facet) AS facets,
               (SELECT coalesce(json_agg(json_build_array(b, n)), '[]') FROM band) AS bands
    """
    row = (await db.execute(text(sql), params)).one()
    items = row.items if isinstance(row.items, list) else json.loads(row.items)
    facet_rows = row.facets if isinstance(row.facets, list) else json.loads(row.facets)
    band_rows = row.bands if isinstance(row.bands, list) else json.loads(row.bands)
    facets: dict[str, list[dict[str, Any]]] = {}
    cat_counts: dict[int, int] = {}
    for token, n in facet_rows:
        key, _, value = token.partition(":")
        if key == "cat":
            cat_counts[int(value)] = n
        else:
            facets.setdefault(key, []).append({"value": value, "count": n})
    for values in facets.values():
        values.sort(key=lambda x: (-x["count"], x["value"]))
    categories = []
    if cat_counts:
        cats = (await db.execute(select(Category.id, Category.slug, Category.name, Category.parent_id)
                                 .where(Category.id.in_(list(cat_counts))))).all()
        categories = sorted(({"id": c.id, "slug": c.slug, "name": c.name, "parent_id": c.parent_id,
                              "count": cat_counts[c.id]} for c in cats), key=lambda c: (-c["count"], c["name"]))
    bands = []
    for b, n in sorted(band_rows):
        lo = PRICE_BANDS[b]
        hi = PRICE_BANDS[b + 1] if b + 1 < len(PRICE_BANDS) else None
        bands.append({"min": lo, "max": hi, "count": n})
    for it in items:
        it["price"] = money.round_money(Decimal(str(it["price"])), cur)
    return SearchResult(total=row.total, items=items, facets=facets, categories=categories, price_bands=bands,
                        corrected=False)


async def delete_product(*, db: AsyncSession, product_id: int) -> None:
    """Unpublish a product (orders keep pointing at its variants, so rows stay)."""
    product = await db.get(Product, product_id)
    if product is None:
        raise NotFound(f"product {product_id} not found")
    product.published = False


async def available_stock(*, db: AsyncSession, variant_ids: list[int]) -> dict[int, int]:
    """Units available per variant over all depots."""
    rows = (await db.execute(select(Stock.variant_id, func.sum(Stock.quantity)).where(Stock.variant_id.in_(variant_ids))
                             .group_by(Stock.variant_id))).all()
    return {v: int(n) for v, n in rows}


_ = (delete, UTC)  # imported for callers' convenience in tests
