"""Catalog: category tree of any depth, typed attributes, search with facet counts, typo correction, exact browse counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from commerce.catalog import service as catalog
from core.errors import ValidationFailed


async def _small_catalog(sessions):
    """Three levels of categories and five products with known attributes and prices."""
    tag = uuid.uuid4().hex[:8]
    async with sessions() as db, db.begin():
        root = await catalog.create_category(db=db, name=f"Outdoor {tag}", slug=f"outdoor-{tag}")
        mid = await catalog.create_category(db=db, name=f"Clothing {tag}", slug=f"outdoor-clothing-{tag}", parent_id=root.id)
        leaf = await catalog.create_category(db=db, name=f"Jackets {tag}", slug=f"outdoor-jackets-{tag}", parent_id=mid.id)
        other = await catalog.create_category(db=db, name=f"Tents {tag}", slug=f"outdoor-tents-{tag}", parent_id=root.id)
        pt = await catalog.create_product_type(db=db, name=f"Gear {tag}", attributes=[
            {"code": "colour", "name": "Colour", "type": "choice", "values": ["red", "blue"]},
            {"code": "size", "name": "Size", "type": "choice", "values": ["S", "M", "L"], "variant": True}])
        word = "kx" + tag.translate(str.maketrans("0123456789", "ghijklmnop"))  # letters only, like real words
        specs = [(leaf, "red", ["S", "M"], "19.90", f"{word} shell jacket"), (leaf, "blue", ["M"], "59.00", f"{word} down jacket"),
                 (leaf, "red", ["L"], "120.00", f"{word} parka"), (other, "blue", ["M"], "249.00", f"{word} dome tent"),
                 (other, "red", ["S"], "9.50", f"{word} tent pegs")]
        for i, (cat, colour, sizes, price, name) in enumerate(specs):
            await catalog.create_product(db=db, type_id=pt.id, category_id=cat.id, name=name, slug=f"p-{tag}-{i}",
                                         brand=f"Brand{tag}", attributes={"colour": colour},
                                         variants=[catalog.VariantIn(sku=f"{tag}-{i}-{s}", prices={"EUR": Decimal(price)},
                                                                     attributes={"size": s}) for s in sizes])
    return root, mid, leaf, other, word


def _counts(facet: list[dict]) -> dict[str, int]:
    return {f["value"]: f["count"] for f in facet}


async def test_search_counts_facets_per_attribute_category_and_price_band(app):
    root, mid, leaf, other, word = await _small_catalog(app.state.sessions)
    async with app.state.sessions() as db, db.begin():
        res = await catalog.search(db=db, q=word)
    assert res.total == 5
    assert _counts(res.facets["colour"]) == {"red": 3, "blue": 2}
    assert _counts(res.facets["size"]) == {"M": 3, "S": 2, "L": 1}
    cats = {c["id"]: c["count"] for c in res.categories}
    assert (cats[root.id], cats[mid.id], cats[leaf.id], cats[other.id]) == (5, 3, 3, 2)
    assert [(str(b["min"]), b["count"]) for b in res.price_bands] == [("0", 1), ("10", 1), ("50", 1), ("100", 2)]


async def test_filters_are_any_of_within_an_attribute_and_all_of_across(app):
    root, mid, leaf, other, word = await _small_catalog(app.state.sessions)
    async with app.state.sessions() as db, db.begin():
        red_m = await catalog.search(db=db, q=word, filters={"colour": ["red"], "size": ["M"]})
        s_or_l = await catalog.search(db=db, q=word, filters={"size": ["S", "L"]})
        in_jackets = await catalog.search(db=db, q=word, category_id=mid.id, filters={"colour": ["red"]})
        unknown = await catalog.search(db=db, q=word, filters={"colour": ["purple"]})
        cheap = await catalog.search(db=db, q=word, price_max=Decimal("20"), sort="price_asc")
    assert [i["name"] for i in red_m.items] == [f"{word} shell jacket"]
    assert s_or_l.total == 3
    assert in_jackets.total == 2 and _counts(in_jackets.facets["colour"]) == {"red": 2}
    assert unknown.total == 0  # an unknown value matches nothing rather than being ignored
    assert [i["price"] for i in cheap.items] == [Decimal("9.50"), Decimal("19.90")]


async def test_a_misspelt_word_is_corrected_to_a_catalog_word(app):
    root, mid, leaf, other, word = await _small_catalog(app.state.sessions)
    # Two neighbouring letters swapped — two that differ, or the "typo" is the word itself
    # (a random word with a double letter made this test fail once in 26).
    i = next(k for k in range(2, len(word) - 1) if word[k] != word[k + 1])
    typo = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    assert typo != word
    async with app.state.sessions() as db, db.begin():
        res = await catalog.search(db=db, q=f"{typo} parka")
    assert res.corrected and res.total == 1 and res.query == f"{word} parka"


async def test_browse_counts_come_precomputed_and_stay_exact_when_products_change(app):
    root, mid, leaf, other, word = await _small_catalog(app.state.sessions)
    async with app.state.sessions() as db, db.begin():
        browse = await catalog.search(db=db, category_id=root.id)
        live = await catalog.search(db=db, category_id=root.id, price_min=Decimal("0"))  # forces the live count
        assert browse.total == live.total == 5
        assert browse.facets == live.facets and browse.price_bands == live.price_bands
        assert {c["id"]: c["count"] for c in browse.categories} == {c["id"]: c["count"] for c in live.categories}
        assert len(browse.items) == 5
        pid = (await db.execute(text("SELECT id FROM products WHERE name = :n"), {"n": f"{word} parka"})).scalar_one()
        await catalog.delete_product(db=db, product_id=pid)
        await db.flush()
        await catalog.refresh_search_fields(db=db, product_ids=[pid])
        after = await catalog.search(db=db, category_id=root.id)
    assert after.total == 4 and _counts(after.facets["size"]).get("L") is None
    assert _counts(after.facets["colour"]) == {"blue": 2, "red": 2}


async def test_early_access_products_are_hidden_unless_the_tier_allows(app):
    tag = uuid.uuid4().hex[:8]
    async with app.state.sessions() as db, db.begin():
        cat = await catalog.create_category(db=db, name=f"Drops {tag}", slug=f"drops-{tag}")
        pt = await catalog.create_product_type(db=db, name=f"Drop {tag}", attributes=[])
        await catalog.create_product(db=db, type_id=pt.id, category_id=cat.id, name=f"limited sneaker {tag}",
                                     slug=f"drop-{tag}", early_access_until=datetime.now(UTC) + timedelta(days=2),
                                     variants=[catalog.VariantIn(sku=f"drop-{tag}", prices={"EUR": Decimal("150")})])
        assert (await catalog.search(db=db, q=tag)).total == 0
        assert (await catalog.search(db=db, category_id=cat.id)).total == 0
        assert (await catalog.search(db=db, q=tag, early_access=True)).total == 1


async def test_attribute_values_are_checked_against_the_product_type(app):
    tag = uuid.uuid4().hex[:8]
    async with app.state.sessions() as db, db.begin():
        cat = await catalog.create_category(db=db, name=f"C {tag}", slug=f"c-{tag}")
        pt = await catalog.create_product_type(db=db, name=f"T {tag}", attributes=[
            {"code": "colour", "name": "Colour", "type": "choice", "values": ["red"]}])
        with pytest.raises(ValidationFailed, match="not one of"):
            await catalog.create_product(db=db, type_id=pt.id, category_id=cat.id, name="x", slug=f"x-{tag}",
                                         attributes={"colour": "green"},
                                         variants=[catalog.VariantIn(sku=f"x-{tag}", prices={"EUR": Decimal(1)})])


async def test_the_api_serves_search_product_and_the_category_tree(client, shop):
    res = (await client.get("/v1/catalog/search", params={"q": shop.word, "f": ["size:M"]})).json()
    assert res["total"] == 1 and res["facets"]["colour"] == [{"value": "red", "count": 1}]
    assert res["items"][0]["price"] == "24.90"
    product = (await client.get(f"/v1/catalog/products/{shop.slug}", params={"currency": "SEK"})).json()
    assert [v["price"] for v in product["variants"]] == ["279.00", "279.00"]
    assert [b["slug"] for b in product["breadcrumb"]] == [f"clothing-{shop.slug.split('-')[-1]}", shop.category_slug]
    tree = (await client.get("/v1/catalog/categories")).json()
    mine = next(c for c in tree if c["id"] == shop.root_category_id)
    assert mine["children"][0]["slug"] == shop.category_slug
