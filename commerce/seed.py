"""A realistic demo shop around a point: depots, delivery zones, a category tree, typed product types and N products.

Used by `serena commerce seed` (the simulator's shop), `benchmarks/catalog.py` (100k
products) and the storefront's browser test. Deterministic for a given `seed`.
Products go in with COPY, because 100k ORM inserts would take minutes; then one full
`catalog.service.refresh_search_fields` computes their prices, facet tokens, search rows
and facet counts. Re-running adds nothing twice: depots, zones, categories and types are
upserted by name/code/slug and products by slug.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import asyncpg

from commerce import money

# (root, child, grandchild or None, product type, tax class, cold chain?, nouns)
TREE: list[tuple[str, str, str | None, str, str, bool, list[str]]] = [
    ("Groceries", "Dairy", "Milk", "grocery", "food", True, ["milk", "oat drink", "cream", "buttermilk"]),
    ("Groceries", "Dairy", "Cheese", "grocery", "food", True, ["cheese", "cheddar", "feta", "halloumi", "brie"]),
    ("Groceries", "Dairy", "Yoghurt", "grocery", "food", True, ["yoghurt", "quark", "skyr"]),
    ("Groceries", "Fruit and vegetables", None, "grocery", "food", False, ["apples", "bananas", "carrots", "potatoes", "tomatoes", "lingonberries"]),
    ("Groceries", "Bakery", None, "grocery", "food", False, ["rye bread", "sourdough", "cinnamon buns", "crispbread", "karelian pies"]),
    ("Groceries", "Frozen", "Ice cream", "grocery", "food", True, ["ice cream", "sorbet", "frozen yoghurt"]),
    ("Groceries", "Frozen", "Frozen meals", "grocery", "food", True, ["salmon soup", "meatballs", "pizza", "spinach pancakes"]),
    ("Groceries", "Drinks", "Coffee", "grocery", "food", False, ["coffee beans", "ground coffee", "espresso", "filter coffee"]),
    ("Groceries", "Drinks", "Juice", "grocery", "food", False, ["orange juice", "apple juice", "berry juice"]),
    ("Clothing", "Jackets", None, "apparel", "standard", False, ["rain jacket", "down jacket", "softshell jacket", "parka", "windbreaker"]),
    ("Clothing", "Shirts", None, "apparel", "standard", False, ["t-shirt", "flannel shirt", "linen shirt", "polo shirt"]),
    ("Clothing", "Trousers", None, "apparel", "standard", False, ["jeans", "chinos", "hiking trousers", "joggers"]),
    ("Clothing", "Shoes", "Running shoes", "apparel", "standard", False, ["running shoes", "trail shoes", "racing flats"]),
    ("Clothing", "Shoes", "Boots", "apparel", "standard", False, ["winter boots", "rubber boots", "hiking boots"]),
    ("Clothing", "Accessories", "Hats", "apparel", "standard", False, ["beanie", "cap", "sun hat"]),
    ("Clothing", "Accessories", "Gloves", "apparel", "standard", False, ["gloves", "mittens", "cycling gloves"]),
    ("Home", "Kitchen", "Cookware", "home", "standard", False, ["frying pan", "saucepan", "casserole", "wok"]),
    ("Home", "Kitchen", "Knives", "home", "standard", False, ["chef knife", "bread knife", "paring knife"]),
    ("Home", "Bedding", None, "home", "standard", False, ["duvet cover", "pillow", "blanket", "sheet set"]),
    ("Home", "Lighting", None, "home", "standard", False, ["table lamp", "floor lamp", "pendant light", "candle holder"]),
    ("Electronics", "Phones", None, "electronics", "standard", False, ["smartphone", "phone case", "screen protector"]),
    ("Electronics", "Headphones", None, "electronics", "standard", False, ["headphones", "earbuds", "headset"]),
    ("Electronics", "Chargers", None, "electronics", "standard", False, ["charger", "power bank", "charging cable"]),
    ("Sports", "Cycling", None, "sports", "standard", False, ["bike helmet", "bike light", "bike lock", "saddle bag"]),
    ("Sports", "Outdoor", None, "sports", "standard", False, ["tent", "sleeping bag", "backpack", "headlamp", "thermos"]),
]

TYPES: dict[str, list[dict]] = {
    "grocery": [{"code": "diet", "name": "Diet", "type": "choice", "values": ["regular", "organic", "vegan", "lactose-free", "gluten-free"]},
                {"code": "size", "name": "Pack size", "type": "choice", "values": ["250 g", "500 g", "1 kg"], "variant": True}],
    "apparel": [{"code": "colour", "name": "Colour", "type": "choice", "values": ["black", "white", "red", "blue", "green", "grey", "yellow"]},
                {"code": "material", "name": "Material", "type": "choice", "values": ["cotton", "wool", "polyester", "linen", "leather", "recycled polyester", "merino"]},
                {"code": "size", "name": "Size", "type": "choice", "values": ["XS", "S", "M", "L", "XL"], "variant": True}],
    "home": [{"code": "colour", "name": "Colour", "type": "choice", "values": ["black", "white", "grey", "blue", "green", "natural"]},
             {"code": "material", "name": "Material", "type": "choice", "values": ["steel", "cast iron", "ceramic", "wood", "glass", "cotton", "linen"]}],
    "electronics": [{"code": "colour", "name": "Colour", "type": "choice", "values": ["black", "white", "blue", "silver"]},
                    {"code": "connectivity", "name": "Connectivity", "type": "choice", "values": ["bluetooth", "usb-c", "wireless", "wired"]}],
    "sports": [{"code": "colour", "name": "Colour", "type": "choice", "values": ["black", "red", "blue", "green", "orange", "yellow"]},
               {"code": "material", "name": "Material", "type": "choice", "values": ["nylon", "polyester", "aluminium", "merino", "down"]},
               {"code": "size", "name": "Size", "type": "choice", "values": ["S", "M", "L"], "variant": True}],
}
BRANDS = {
    "grocery": ["Valio", "Arla", "Fazer", "Paulig", "Pirkka", "Oululainen", "Saarioinen", "Juhla Mokka", "Kotimaista", "Felix"],
    "apparel": ["Nordwind", "Halti", "Luhta", "Marimekko", "Reima", "Icepeak", "Makia", "Samuji", "Arctic Fox", "Sinisalo"],
    "home": ["Iittala", "Fiskars", "Hackman", "Finlayson", "Artek", "Secto", "Muurla", "Kivi"],
    "electronics": ["Nokia", "Genelec", "Aalto Audio", "Polar", "Suunto", "Volt", "Kaiku"],
    "sports": ["Suunto", "Halti", "Jopo", "Helkama", "Tunturi", "Karhu", "Fjällräven", "Sasta"],
}
ADJECTIVES = ["classic", "lightweight", "urban", "arctic", "trail", "everyday", "premium", "compact", "nordic", "soft",
              "warm", "fresh", "smoked", "original", "winter", "summer", "midnight", "forest", "lakeside", "sauna"]
PRICE_RANGE = {"grocery": (1.2, 14.0), "apparel": (15.0, 320.0), "home": (9.0, 260.0), "electronics": (9.0, 480.0),
               "sports": (12.0, 390.0)}
WEIGHT_KG = {"grocery": (0.25, 1.2), "apparel": (0.2, 1.6), "home": (0.3, 4.0), "electronics": (0.05, 0.8), "sports": (0.2, 3.5)}
VOLUME_L = {"grocery": (0.3, 2.0), "apparel": (1.0, 9.0), "home": (1.0, 30.0), "electronics": (0.2, 3.0), "sports": (1.0, 25.0)}


@dataclass
class SeedResult:
    depot_ids: list[int]
    zone_codes: list[str]
    categories: int
    products: int
    variants: int


def _circle_wkt(lat: float, lng: float, radius_m: float, n: int = 48) -> str:
    """A polygon approximating a circle (good enough for demo zones of a few km)."""
    pts = []
    for i in range(n + 1):
        a = 2 * math.pi * (i % n) / n
        dlat = radius_m * math.cos(a) / 111_320
        dlng = radius_m * math.sin(a) / (111_320 * math.cos(math.radians(lat)))
        pts.append(f"{lng + dlng:.6f} {lat + dlat:.6f}")
    return f"SRID=4326;MULTIPOLYGON((({', '.join(pts)})))"


def _price(rnd: random.Random, lo: float, hi: float) -> Decimal:
    # Log-uniform, ending in .90/.50/.95 like shelf prices.
    raw = math.exp(rnd.uniform(math.log(lo), math.log(hi)))
    return (Decimal(int(raw)) + Decimal(rnd.choice(["0.90", "0.50", "0.95", "0.00"]))).max(Decimal("0.50"))


async def seed(*, dsn: str, products: int = 1000, lat: float = 60.1699, lng: float = 24.9384, seed: int = 7,
               city: str = "Helsinki") -> SeedResult:
    """Create depots and delivery zones around (lat, lng) and a catalog of `products` products."""
    rnd = random.Random(seed)
    conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with conn.transaction():
            depots = [(f"{city} Central Depot", lat, lng), (f"{city} East Depot", lat + 0.035, lng + 0.12)]
            depot_ids = []
            for name, dlat, dlng in depots:
                depot_ids.append(await conn.fetchval("""
                    INSERT INTO depots (name, location, address) VALUES ($1, ST_GeomFromEWKT($2), $3)
                    ON CONFLICT (name) DO UPDATE SET location = EXCLUDED.location RETURNING id
                """, name, f"SRID=4326;POINT({dlng} {dlat})", f"{name}, {city}"))
            zones = [(f"{city.lower()}-centre", f"{city} centre", 4_000, "2.90"),
                     (f"{city.lower()}-greater", f"Greater {city}", 15_000, "4.90")]
            for code, name, radius_m, fee in zones:
                await conn.execute("""
                    INSERT INTO service_zones (code, name, kind, area, base_fee, currency, active)
                    VALUES ($1, $2, 'delivery', ST_GeomFromEWKT($3), $4, 'EUR', true)
                    ON CONFLICT (code) DO UPDATE SET area = EXCLUDED.area, base_fee = EXCLUDED.base_fee, active = true
                """, code, name, _circle_wkt(lat, lng, radius_m), fee)
            type_ids = {}
            for tname, attrs in TYPES.items():
                type_ids[tname] = await conn.fetchval("""
                    INSERT INTO product_types (name, attributes) VALUES ($1, $2::jsonb)
                    ON CONFLICT (name) DO UPDATE SET attributes = EXCLUDED.attributes RETURNING id
                """, tname, json.dumps(attrs))
            cat_ids: dict[str, int] = {}
            cat_paths: dict[str, list[int]] = {}

            async def category(name: str, parent: str | None) -> str:
                slug = name.lower().replace(" ", "-")
                key = slug if parent is None else f"{parent}/{slug}"
                if key in cat_ids:
                    return key
                slug_full = key.replace("/", "-")
                parent_id = cat_ids[parent] if parent else None
                cid = await conn.fetchval("""
                    INSERT INTO catalog_categories (parent_id, slug, name) VALUES ($1, $2, $3)
                    ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id
                """, parent_id, slug_full, name)
                path = [*(cat_paths[parent] if parent else []), cid]
                await conn.execute("UPDATE catalog_categories SET path = $2 WHERE id = $1", cid, path)
                cat_ids[key], cat_paths[key] = cid, path
                return key

            leaves = []
            for root, child, grand, tname, tax, cold, nouns in TREE:
                k = await category(root, None)
                k = await category(child, k)
                if grand:
                    k = await category(grand, k)
                leaves.append((k, tname, tax, cold, nouns))

            existing = await conn.fetchval("SELECT count(*) FROM products WHERE slug LIKE 'demo-%'")
            todo = max(0, products - existing)
            n_variants = 0
            if todo:
                n_variants = await _products(conn, rnd, start=existing, count=todo, leaves=leaves, type_ids=type_ids,
                                             cat_paths=cat_paths, depot_ids=depot_ids)
            n_cats = await conn.fetchval("SELECT count(*) FROM catalog_categories")
            total = await conn.fetchval("SELECT count(*) FROM products WHERE slug LIKE 'demo-%'")
        # Statistics first: without them the planner picks hash joins per product in the rebuild.
        await conn.execute("ANALYZE products; ANALYZE product_variants; ANALYZE variant_prices; ANALYZE catalog_categories")
        if todo:
            await reindex(dsn)
        for table in ("products", "product_variants", "stock", "product_search", "facet_tokens", "facet_counts",
                      "catalog_words"):
            await conn.execute(f"VACUUM ANALYZE {table}")  # statistics, visibility map, GIN pending lists
    finally:
        await conn.close()
    return SeedResult(depot_ids, [z[0] for z in zones], n_cats, total, n_variants)


async def reindex(dsn: str) -> None:
    """Rebuild the whole search index (product_search, facet tokens and counts, word list)."""
    from commerce.catalog import service as catalog
    from core.db import make_engine, make_sessionmaker

    engine = make_engine(dsn, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as db, db.begin():
            await catalog.refresh_search_fields(db=db)
    finally:
        await engine.dispose()


async def _products(conn, rnd: random.Random, *, start: int, count: int, leaves, type_ids, cat_paths, depot_ids) -> int:
    pids = [r[0] for r in await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('products', 'id')) FROM generate_series(1, $1)", count)]
    prod_rows, var_specs = [], []
    for n, pid in zip(range(start, start + count), pids, strict=True):
        leaf, tname, tax, cold, nouns = rnd.choice(leaves)
        attrs_spec = {a["code"]: a for a in TYPES[tname]}
        brand = rnd.choice(BRANDS[tname])
        noun = rnd.choice(nouns)
        adj = rnd.choice(ADJECTIVES)
        attrs = {code: rnd.choice(a["values"]) for code, a in attrs_spec.items() if not a.get("variant")}
        name = f"{brand} {adj} {noun}"
        detail = ", ".join(f"{k} {v}" for k, v in attrs.items())
        description = (f"{adj.capitalize()} {noun} by {brand}. {detail.capitalize()}. "
                       f"{rnd.choice(['Made to last', 'Designed in Finland', 'A customer favourite', 'Great value', 'New season'])}; "
                       f"{rnd.choice(['delivered the same day', 'perfect for the city', 'for every weather', 'ready for the weekend'])}.")
        lo, hi = PRICE_RANGE[tname]
        base = _price(rnd, lo, hi)
        sizes = attrs_spec["size"]["values"] if "size" in attrs_spec else [None]
        chosen = sorted(rnd.sample(sizes, k=min(len(sizes), rnd.choice([1, 2, 3]))), key=sizes.index) if sizes[0] else [None]
        slug = f"demo-{n}"
        prices: dict[str, Decimal] = {}
        for i, size in enumerate(chosen):
            eur = base + Decimal(i) * (base * Decimal("0.4")).quantize(Decimal("1"), rounding=ROUND_HALF_UP)
            sek = money.round_money(eur * Decimal("11.4"), "SEK").quantize(Decimal("1")) - Decimal("0.10")
            var_specs.append((pid, f"D{n:07d}-{i}", size or "", {"size": size} if size else {},
                              round(rnd.uniform(*WEIGHT_KG[tname]), 3), round(rnd.uniform(*VOLUME_L[tname]), 3),
                              eur, sek.max(Decimal("1"))))
            prices["EUR"] = min(prices.get("EUR", eur), eur)
            prices["SEK"] = min(prices.get("SEK", sek), sek)
        prod_rows.append((pid, type_ids[tname], cat_paths[leaf][-1], slug, name, description, brand, json.dumps(attrs),
                          tax, ["cold"] if cold else [], True, json.dumps({k: str(v) for k, v in prices.items()})))
    await conn.copy_records_to_table(
        "products", records=prod_rows,
        columns=["id", "type_id", "category_id", "slug", "name", "description", "brand", "attributes", "tax_class", "skills",
                 "published", "prices"])
    vids = [r[0] for r in await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('product_variants', 'id')) FROM generate_series(1, $1)", len(var_specs))]
    await conn.copy_records_to_table(
        "product_variants", records=[(vid, pid, sku, name, json.dumps(attrs), Decimal(str(w)), Decimal(str(v)), True)
                                     for vid, (pid, sku, name, attrs, w, v, _, _) in zip(vids, var_specs, strict=True)],
        columns=["id", "product_id", "sku", "name", "attributes", "weight_kg", "volume_l", "active"])
    price_rows = []
    stock_rows = []
    for vid, (_, _, _, _, _, _, eur, sek) in zip(vids, var_specs, strict=True):
        price_rows += [(vid, "EUR", eur, True), (vid, "SEK", sek, True)]
        for d in depot_ids:
            stock_rows.append((vid, d, rnd.choice([0, 3, 8, 15, 25, 40, 60])))
    await conn.copy_records_to_table("variant_prices", records=price_rows, columns=["variant_id", "currency", "amount", "includes_tax"])
    await conn.copy_records_to_table("stock", records=stock_rows, columns=["variant_id", "depot_id", "quantity"])
    await conn.copy_records_to_table(
        "product_images", records=[(pid, f"products/demo/{pid % 97}.jpg", "") for pid in pids],
        columns=["product_id", "storage_key", "alt"])
    return len(var_specs)
