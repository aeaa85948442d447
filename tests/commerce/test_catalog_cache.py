"""The catalog answer cache: a repeated read is served from memory, and no answer rendered before a catalog write is served after it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from commerce.catalog import cache
from commerce.catalog import service as catalog


async def _product(sessions, *, tag: str, name: str, price: str = "10.00", category_id: int | None = None,
                   early_access_until: datetime | None = None) -> tuple[int, int]:
    async with sessions() as db, db.begin():
        if category_id is None:
            category_id = (await catalog.create_category(db=db, name=f"Cache {tag}", slug=f"cache-{tag}")).id
        pt = await catalog.create_product_type(db=db, name=f"Cache type {tag} {uuid.uuid4().hex[:4]}", attributes=[])
        p = await catalog.create_product(db=db, type_id=pt.id, category_id=category_id, name=name,
                                         slug=f"cache-{uuid.uuid4().hex[:10]}", early_access_until=early_access_until,
                                         variants=[catalog.VariantIn(sku=f"cache-{uuid.uuid4().hex[:10]}",
                                                                     prices={"EUR": Decimal(price)}, stock={})])
    return category_id, p.id


async def test_a_repeated_search_is_served_from_the_cache(client, app):
    tag = uuid.uuid4().hex[:8]
    word = "qz" + tag.translate(str.maketrans("0123456789", "ghijklmnop"))
    await _product(app.state.sessions, tag=tag, name=f"{word} kettle")
    first = (await client.get("/v1/catalog/search", params={"q": word})).json()
    c = cache.cache_for(app)
    hits = c.hits
    second = (await client.get("/v1/catalog/search", params={"q": word})).json()
    assert first == second and first["total"] == 1
    assert c.hits == hits + 1


async def test_no_search_answer_from_before_a_write_is_served_after_it(client, app):
    tag = uuid.uuid4().hex[:8]
    word = "qz" + tag.translate(str.maketrans("0123456789", "ghijklmnop"))
    category_id, _ = await _product(app.state.sessions, tag=tag, name=f"{word} teapot")
    slug = (await client.get("/v1/catalog/search", params={"q": word})).json()["items"][0]["slug"]
    assert (await client.get("/v1/catalog/search", params={"q": word})).json()["total"] == 1  # cached now
    tree = (await client.get("/v1/catalog/categories")).json()

    await _product(app.state.sessions, tag=tag, name=f"{word} cup", category_id=category_id)  # a write, committed
    assert (await client.get("/v1/catalog/search", params={"q": word})).json()["total"] == 2

    async with app.state.sessions() as db, db.begin():
        pid = (await db.execute(text("SELECT id FROM products WHERE slug = :s"), {"s": slug})).scalar_one()
        await catalog.delete_product(db=db, product_id=pid)
        await db.flush()
        await catalog.refresh_search_fields(db=db, product_ids=[pid])
    assert (await client.get("/v1/catalog/search", params={"q": word})).json()["total"] == 1
    assert (await client.get(f"/v1/catalog/products/{slug}")).status_code == 404

    async with app.state.sessions() as db, db.begin():
        await catalog.create_category(db=db, name=f"Cache new {tag}", slug=f"cache-new-{tag}")
    after = (await client.get("/v1/catalog/categories")).json()
    assert any(c["slug"] == f"cache-new-{tag}" for c in after) and after != tree


async def test_a_rolled_back_write_does_not_bump_and_a_committed_one_does(app, redis, settings):
    key = cache.version_key(settings.redis_prefix)
    cache.cache_for(app)  # registers this app's Redis prefix as a place to bump
    before = int(await redis.get(key) or 0)
    tag = uuid.uuid4().hex[:8]
    async with app.state.sessions() as db:
        async with db.begin():
            await catalog.create_category(db=db, name=f"Gone {tag}", slug=f"gone-{tag}")
            await db.rollback()
    assert int(await redis.get(key) or 0) == before
    async with app.state.sessions() as db, db.begin():
        await catalog.create_category(db=db, name=f"Kept {tag}", slug=f"kept-{tag}")
    assert int(await redis.get(key) or 0) == before + 1


async def test_units_in_stock_on_a_cached_product_page_are_live(client, app):
    tag = uuid.uuid4().hex[:8]
    _, pid = await _product(app.state.sessions, tag=tag, name=f"stock {tag}")
    async with app.state.sessions() as db, db.begin():
        slug, variant = (await db.execute(text("SELECT p.slug, v.id FROM products p JOIN product_variants v ON v.product_id = p.id"
                                               " WHERE p.id = :p"), {"p": pid})).one()
        depot = (await db.execute(text("SELECT id FROM depots ORDER BY id LIMIT 1"))).scalar_one_or_none()
    assert (await client.get(f"/v1/catalog/products/{slug}")).json()["variants"][0]["in_stock"] == 0
    if depot is None:
        return
    async with app.state.sessions() as db, db.begin():  # what a checkout or a stock count does: no catalog version bump
        await catalog.set_stock(db=db, variant_id=variant, depot_id=depot, quantity=7)
    assert (await client.get(f"/v1/catalog/products/{slug}")).json()["variants"][0]["in_stock"] == 7


async def test_an_early_access_product_appears_for_anonymous_shoppers_when_its_time_comes(client, app):
    tag = uuid.uuid4().hex[:8]
    word = "qz" + tag.translate(str.maketrans("0123456789", "ghijklmnop"))
    await _product(app.state.sessions, tag=tag, name=f"{word} drop",
                   early_access_until=datetime.now(UTC) + timedelta(seconds=2))
    assert (await client.get("/v1/catalog/search", params={"q": word})).json()["total"] == 0
    import asyncio

    await asyncio.sleep(2.5)  # no write happens: the cached "0" must still not outlive the early-access period
    assert (await client.get("/v1/catalog/search", params={"q": word})).json()["total"] == 1
