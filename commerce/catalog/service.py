"""Catalog use cases: build the tree and products, read a product, search with facets, stock per depot.

Search reads `product_search`, a narrow row per published product (tsvector, int[] of
facet token ids, prices per currency) kept in step by `refresh_search_fields`. A search
is one SQL round trip: a materialised CTE of the matching rows, from which the page, the
facet counts (unnest of the token ids + GROUP BY; the token '*' counts the total,
'cat:<id>' the categories at every level, 'price:<cur>:<band>' the price bands) are all
aggregated. Full text uses the stored tsvector with `ts_rank_cd`. When the words match
nothing, each unknown word is replaced by the closest word of the catalog
(`catalog_words`, Levenshtein ≤ 2) and the search runs again (`corrected`); we chose
correcting words over fuzzy-matching every product name because the word list is
thousands of rows where the names are 100k, and the corrected query keeps full-text
ranking.

Browsing a category with no filter reads the counts from `facet_counts` (exact,
maintained incrementally) instead of counting tens of thousands of products per request.
Facet counts are over the products matching every selected filter (conjunctive counts):
"this many if you also tick this".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from commerce import money
from commerce.catalog import cache
from commerce.catalog.models import Category, Product, ProductImage, ProductType, Stock, Variant, VariantPrice
from core.errors import NotFound, ValidationFailed

# Price band edges (in the currency searched); the last band is open-ended.
PRICE_BANDS: tuple[Decimal, ...] = tuple(Decimal(x) for x in ("0", "10", "25", "50", "100", "250"))
MAX_PER_PAGE = 100


# --- building the catalog -------------------------------------------------------------------


async def create_category(*, db: AsyncSession, name: str, slug: str, parent_id: int | None = None,
                          position: int = 0) -> Category:
    """Add a category under `parent_id` (None: a root)."""
    cache.mark_changed(db)
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
    cache.mark_changed(db)
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
    cache.mark_changed(db)
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


def _band_case(amount_sql: str) -> str:
    """SQL giving the price band index (0..len-1) of an amount."""
    parts = []
    for i, lo in enumerate(PRICE_BANDS):
        hi = PRICE_BANDS[i + 1] if i + 1 < len(PRICE_BANDS) else None
        parts.append(f"WHEN {amount_sql} >= {lo}" + (f" AND {amount_sql} < {hi}" if hi is not None else "") + f" THEN {i}")
    return "CASE " + " ".join(parts) + " END"


# The facet tokens of a product: '*' (every product), its categories up the tree, brand,
# product and variant attribute values, and its price band per currency.
_TOKENS_SQL = f"""
    ARRAY(SELECT DISTINCT t FROM (
        SELECT '*' AS t
        UNION ALL SELECT 'cat:' || c FROM catalog_categories cc, unnest(cc.path) c WHERE cc.id = p.category_id
        UNION ALL SELECT 'brand:' || p.brand WHERE p.brand <> ''
        UNION ALL SELECT key || ':' || value FROM jsonb_each_text(p.attributes)
        UNION ALL SELECT a.key || ':' || a.value FROM product_variants v, jsonb_each_text(v.attributes) a
                  WHERE v.product_id = p.id AND v.active
        UNION ALL SELECT 'price:' || key || ':' || ({_band_case("value::numeric")}) FROM jsonb_each_text(p.prices)
    ) tokens ORDER BY t)
"""

# Per (bucket, token) counts of a set of product_search rows; bucket 0 is the whole catalog,
# other buckets are the categories the product sits in (at every level).
_COUNTS_SQL = """
    SELECT b.bucket, t AS token_id, count(*) AS n
    FROM product_search s
    CROSS JOIN LATERAL (SELECT 0 AS bucket UNION ALL
                        SELECT ft.category_id FROM facet_tokens ft
                        WHERE ft.id = ANY(s.facet_ids) AND ft.category_id IS NOT NULL) b
    CROSS JOIN LATERAL unnest(s.facet_ids) t
    {where}
    GROUP BY 1, 2
"""


async def refresh_search_fields(*, db: AsyncSession, product_ids: list[int] | None = None) -> None:
    """Recompute products' denormalised prices and facet tokens and their search rows and facet counts.

    With `product_ids` the change is incremental: the products' old contribution to
    `facet_counts` is subtracted and the new one added, in the caller's transaction.
    Without, everything is rebuilt (seed, reindex).
    """
    cache.mark_changed(db)
    ids = {"ids": product_ids} if product_ids is not None else {}
    where_p = "WHERE p.id = ANY(:ids)" if product_ids is not None else ""
    # Set-based (one aggregate joined back), so a full rebuild is one pass over the variants
    # rather than a subquery per product.
    await db.execute(text(f"""
        UPDATE products p SET prices = coalesce(m.prices, '{{}}')
        FROM (SELECT p2.id, (SELECT jsonb_object_agg(currency, amount::text) FROM (
                  SELECT vp.currency, min(vp.amount) AS amount
                  FROM product_variants v JOIN variant_prices vp ON vp.variant_id = v.id
                  WHERE v.product_id = p2.id AND v.active GROUP BY vp.currency) c) AS prices
              FROM products p2 {where_p.replace("p.id", "p2.id")}) m
        WHERE m.id = p.id
    """), ids)
    await db.execute(text(f"UPDATE products p SET facets = {_TOKENS_SQL} {where_p}"), ids)
    await db.execute(text(f"""
        INSERT INTO facet_tokens (token, category_id)
        SELECT DISTINCT t, CASE WHEN t LIKE 'cat:%' THEN substr(t, 5)::int END
        FROM products p, unnest(p.facets) t {where_p}
        ON CONFLICT (token) DO NOTHING
    """), ids)
    if product_ids is not None:
        await _apply_counts(db, "WHERE s.product_id = ANY(:ids)", ids, sign=-1)
        await db.execute(text("DELETE FROM product_search WHERE product_id = ANY(:ids)"), ids)
    else:
        await db.execute(text("TRUNCATE facet_counts, product_search"))
    await db.execute(text(f"""
        INSERT INTO product_search (product_id, search, facet_ids, prices, early_access_until)
        SELECT p.id, p.search,
               ARRAY(SELECT ft.id FROM facet_tokens ft WHERE ft.token = ANY(p.facets) ORDER BY ft.id),
               p.prices, p.early_access_until
        FROM products p WHERE p.published {"AND p.id = ANY(:ids)" if product_ids is not None else ""}
    """), ids)
    await _apply_counts(db, "WHERE s.product_id = ANY(:ids)" if product_ids is not None else "", ids, sign=1)
    # GIN indexes buffer new entries in a "pending list" that every search then scans linearly
    # (measured: a 4,000-match word query spent 6-10 ms there after the 100k seed, 0.6 ms after).
    # Merging it now keeps reads fast; it costs the writer, and catalog writes are rare.
    await db.execute(text("SELECT gin_clean_pending_list('ix_product_search_search'::regclass), "
                          "gin_clean_pending_list('ix_product_search_facet_ids'::regclass)"))
    await db.execute(text(f"""
        INSERT INTO catalog_words (word)
        SELECT DISTINCT w FROM products p,
               regexp_split_to_table(lower(p.name || ' ' || p.brand), '[^[:alpha:]]+') w
        WHERE length(w) >= 3 {"AND p.id = ANY(:ids)" if product_ids is not None else ""}
        ON CONFLICT DO NOTHING
    """), ids)


async def _apply_counts(db: AsyncSession, where: str, params: dict, *, sign: int) -> None:
    await db.execute(text(f"""
        INSERT INTO facet_counts (category_id, token_id, n)
        SELECT bucket, token_id, {sign} * n FROM ({_COUNTS_SQL.format(where=where)}) c
        ON CONFLICT (category_id, token_id) DO UPDATE SET n = facet_counts.n + EXCLUDED.n
    """), params)


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
    page = await get_product_page(db=db, slug=slug, currency=currency, storage_base_url=storage_base_url)
    return with_stock(page, await available_stock(db=db, variant_ids=[v["id"] for v in page["variants"]]))


def with_stock(page: dict[str, Any], stock: dict[int, int]) -> dict[str, Any]:
    """The product page with each variant's units in stock (a copy: `page` may be a cached one)."""
    return {**page, "variants": [{**v, "in_stock": stock.get(v["id"], 0)} for v in page["variants"]]}


async def seconds_until_early_access_ends(*, db: AsyncSession) -> float | None:
    """Seconds until the next product leaves early access (what anonymous shoppers see changes then), None if none will."""
    s = (await db.execute(text(
        "SELECT extract(epoch FROM min(early_access_until) - now()) FROM product_search WHERE early_access_until > now()"
    ))).scalar_one_or_none()
    return None if s is None else float(s)


async def get_product_page(*, db: AsyncSession, slug: str, currency: str, storage_base_url: str = "/media/") -> dict[str, Any]:
    """A product page's data without units in stock (what can be cached until the next catalog write)."""
    product = (await db.execute(select(Product).where(Product.slug == slug, Product.published))).scalar_one_or_none()
    if product is None:
        raise NotFound(f"product {slug!r} not found")
    cur = money.check_currency(currency)
    pt = await db.get(ProductType, product.type_id)
    cat = await db.get(Category, product.category_id)
    rows = (await db.execute(
        select(Variant, VariantPrice.amount, VariantPrice.includes_tax)
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
             "volume_l": v.volume_l, "price": amount, "includes_tax": inc}
            for v, amount, inc in rows
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
    corrected: bool  # True when the words matched nothing and a spelling correction answered
    query: str = ""  # the query actually run (the corrected one when `corrected`)


async def search(*, db: AsyncSession, q: str = "", category_id: int | None = None,
                 filters: dict[str, list[str]] | None = None, currency: str = "EUR",
                 price_min: Decimal | None = None, price_max: Decimal | None = None, sort: str = "relevance",
                 page: int = 1, per_page: int = 24, early_access: bool = False) -> SearchResult:
    """Full-text search with facet counts per attribute value, category and price band."""
    cur = money.check_currency(currency)
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    page = max(1, page)
    q = q.strip()[:200]
    filters = {k: v for k, v in (filters or {}).items() if v}
    # JIT compilation costs tens of ms and only pays off on long analytical queries; a search
    # over a large category crosses the planner's JIT cost threshold without benefiting.
    await db.execute(text("SET LOCAL jit = off"))
    kw = dict(category_id=category_id, filters=filters, cur=cur, price_min=price_min, price_max=price_max, sort=sort,
              page=page, per_page=per_page, early_access=early_access)
    if not q and not filters and price_min is None and price_max is None and (
            early_access or not await _early_access_in(db, category_id)):
        return await _browse(db, **kw)
    result = await _search_once(db, q=q, **kw)
    if result.total == 0 and q:
        fixed = await correct_spelling(db=db, q=q)
        if fixed and fixed != q.lower():
            result = await _search_once(db, q=fixed, **kw)
            result.corrected = result.total > 0
    return result


async def correct_spelling(*, db: AsyncSession, q: str) -> str | None:
    """The query with each unknown word replaced by the closest catalog word (Levenshtein ≤ 2, trigram tie-break)."""
    words = [w for w in re.split(r"[^\w]+", q.lower()) if w]
    if not words:
        return None
    out = []
    for w in words:
        if len(w) < 3:
            out.append(w)
            continue
        row = (await db.execute(text("""
            SELECT word FROM catalog_words
            WHERE length(word) BETWEEN :lo AND :hi AND levenshtein_less_equal(word, :w, :k) <= :k
            ORDER BY levenshtein_less_equal(word, :w, :k), similarity(word, :w) DESC, word LIMIT 1
        """), {"w": w, "lo": len(w) - 2, "hi": len(w) + 2, "k": 1 if len(w) <= 4 else 2})).first()
        out.append(row.word if row else w)
    return " ".join(out)


async def _early_access_in(db: AsyncSession, category_id: int | None) -> bool:
    """Whether early-access products are hidden in this scope right now (then counts cannot be precomputed)."""
    token = f"cat:{category_id}" if category_id is not None else "*"
    return (await db.execute(text("""
        SELECT EXISTS (SELECT 1 FROM product_search s WHERE s.early_access_until IS NOT NULL
                       AND s.early_access_until > now()
                       AND s.facet_ids @> ARRAY[(SELECT id FROM facet_tokens WHERE token = :t)])
    """), {"t": token})).scalar_one()


_ORDER = {"price_asc": "price ASC NULLS LAST, id", "price_desc": "price DESC NULLS LAST, id", "newest": "id DESC"}


def _decode(cur: str, token_counts: list[list[Any]]) -> tuple[int, dict, list[dict], list[dict]]:
    """Rows of (token, count, category slug, name, parent) → total, attribute facets, categories, price bands."""
    facets: dict[str, list[dict[str, Any]]] = {}
    categories: list[dict[str, Any]] = []
    bands = []
    total = 0
    for token, n, slug, name, parent_id in token_counts:
        key, _, value = token.partition(":")
        if token == "*":
            total = n
        elif key == "cat":
            if slug is not None:
                categories.append({"id": int(value), "slug": slug, "name": name, "parent_id": parent_id, "count": n})
        elif key == "price":
            c, _, b = value.partition(":")
            if c == cur:
                i = int(b)
                bands.append({"min": PRICE_BANDS[i], "max": PRICE_BANDS[i + 1] if i + 1 < len(PRICE_BANDS) else None,
                              "count": n})
        else:
            facets.setdefault(key, []).append({"value": value, "count": n})
    for values in facets.values():
        values.sort(key=lambda x: (-x["count"], x["value"]))
    bands.sort(key=lambda b: b["min"])
    categories.sort(key=lambda c: (-c["count"], c["name"]))
    return total, facets, categories, bands


def _finish(*, cur: str, total: int | None, items: list, token_counts: list) -> SearchResult:
    counted_total, facets, categories, bands = _decode(cur, token_counts)
    out = []
    for pid, slug, name, brand, price, rank in items:
        out.append({"id": pid, "slug": slug, "name": name, "brand": brand,
                    "price": money.round_money(Decimal(str(price)), cur) if price is not None else None, "rank": rank})
    return SearchResult(total=counted_total if total is None else total, items=out, facets=facets, categories=categories,
                        price_bands=bands, corrected=False)


_PAGE_JSON = """coalesce(json_agg(json_build_array(pg.id, p.slug, p.name, p.brand, pg.price, pg.rank) ORDER BY pg.ord), '[]')"""


async def _browse(db: AsyncSession, *, category_id: int | None, cur: str, sort: str, page: int, per_page: int,
                  **_: Any) -> SearchResult:
    """A category (or the whole catalog) without filters: counts from facet_counts, one page from the index."""
    token = f"cat:{category_id}" if category_id is not None else "*"
    order = _ORDER.get(sort, "id")
    row = (await db.execute(text(f"""
        WITH pg AS (
            SELECT s.product_id AS id, (s.prices ->> :cur)::numeric AS price, 0::real AS rank,
                   row_number() OVER (ORDER BY {order.replace("id", "s.product_id").replace("price", "(s.prices ->> :cur)::numeric")}) AS ord
            FROM product_search s
            WHERE s.facet_ids @> ARRAY[(SELECT id FROM facet_tokens WHERE token = :token)] AND s.prices ? :cur
            ORDER BY {order.replace("id", "s.product_id").replace("price", "(s.prices ->> :cur)::numeric")}
            LIMIT :limit OFFSET :offset
        )
        SELECT (SELECT {_PAGE_JSON} FROM pg JOIN products p ON p.id = pg.id) AS items,
               (SELECT coalesce(json_agg(json_build_array(ft.token, c.n, cc.slug, cc.name, cc.parent_id)), '[]')
                FROM facet_counts c JOIN facet_tokens ft ON ft.id = c.token_id
                LEFT JOIN catalog_categories cc ON cc.id = ft.category_id
                WHERE c.category_id = :bucket AND c.n > 0) AS counts
    """), {"cur": cur, "token": token, "bucket": category_id or 0, "limit": per_page, "offset": (page - 1) * per_page})).one()
    return _finish(cur=cur, total=None, items=_json(row.items), token_counts=_json(row.counts))


def _json(value: Any) -> list:
    return value if isinstance(value, list) else json.loads(value)


async def _search_once(db: AsyncSession, *, q: str, category_id: int | None, filters: dict[str, list[str]], cur: str,
                       price_min: Decimal | None, price_max: Decimal | None, sort: str, page: int, per_page: int,
                       early_access: bool) -> SearchResult:
    where = ["s.prices ? :cur"]
    params: dict[str, Any] = {"cur": cur, "limit": per_page, "offset": (page - 1) * per_page}
    rank = "0::real"
    if not early_access:
        where.append("(s.early_access_until IS NULL OR s.early_access_until <= now())")
    if q:
        where.append("s.search @@ websearch_to_tsquery('english', :q)")
        rank = "ts_rank_cd(s.search, websearch_to_tsquery('english', :q))"
        params["q"] = q
    # Tokens are resolved to ids in the query; an unknown token resolves to -1, which no row has
    # (dropping it instead would silently widen the search).
    all_tokens = [f"cat:{category_id}"] if category_id is not None else []
    for i, (key, values) in enumerate(sorted(filters.items())):
        tokens = [f"{key}:{v}" for v in values]
        if len(tokens) == 1:
            all_tokens += tokens
        else:
            where.append(f"s.facet_ids && (SELECT coalesce(array_agg(id), ARRAY[-1]) FROM facet_tokens WHERE token = ANY(:any{i}))")
            params[f"any{i}"] = tokens
    if all_tokens:
        where.append("s.facet_ids @> (SELECT CASE WHEN count(*) = :n_all THEN array_agg(id) ELSE ARRAY[-1] END "
                     "FROM facet_tokens WHERE token = ANY(:all))")
        params["all"], params["n_all"] = all_tokens, len(all_tokens)
    price = "(s.prices ->> :cur)::numeric"
    if price_min is not None:
        where.append(f"{price} >= :pmin")
        params["pmin"] = price_min
    if price_max is not None:
        where.append(f"{price} <= :pmax")
        params["pmax"] = price_max
    order = _ORDER.get(sort, "rank DESC, id")
    row = (await db.execute(text(f"""
        WITH matched AS MATERIALIZED (
            SELECT s.product_id AS id, {price} AS price, s.facet_ids, {rank} AS rank
            FROM product_search s WHERE {' AND '.join(where)}
        ),
        pg AS (SELECT id, price, rank, row_number() OVER (ORDER BY {order}) AS ord
               FROM matched ORDER BY {order} LIMIT :limit OFFSET :offset),
        counts AS (SELECT t, count(*) AS n FROM matched, unnest(facet_ids) t GROUP BY t)
        SELECT (SELECT {_PAGE_JSON} FROM pg JOIN products p ON p.id = pg.id) AS items,
               (SELECT coalesce(json_agg(json_build_array(ft.token, counts.n, cc.slug, cc.name, cc.parent_id)), '[]')
                FROM counts JOIN facet_tokens ft ON ft.id = counts.t
                LEFT JOIN catalog_categories cc ON cc.id = ft.category_id) AS counts
    """), params)).one()
    result = _finish(cur=cur, total=None, items=_json(row.items), token_counts=_json(row.counts))
    result.query = q
    return result


async def delete_product(*, db: AsyncSession, product_id: int) -> None:
    """Unpublish a product (orders keep pointing at its variants, so rows stay)."""
    cache.mark_changed(db)
    product = await db.get(Product, product_id)
    if product is None:
        raise NotFound(f"product {product_id} not found")
    product.published = False


async def available_stock(*, db: AsyncSession, variant_ids: list[int]) -> dict[int, int]:
    """Units available per variant over all depots."""
    rows = (await db.execute(select(Stock.variant_id, func.sum(Stock.quantity)).where(Stock.variant_id.in_(variant_ids))
                             .group_by(Stock.variant_id))).all()
    return {v: int(n) for v, n in rows}




async def available_stock_now(*, pool: Any, variant_ids: list[int]) -> dict[int, int]:
    """`available_stock` on a raw asyncpg pool: the product page's one live query, without an ORM session."""
    rows = await pool.fetch("SELECT variant_id, sum(quantity)::bigint AS n FROM stock WHERE variant_id = ANY($1::int[])"
                            " GROUP BY variant_id", variant_ids)
    return {r["variant_id"]: int(r["n"]) for r in rows}
