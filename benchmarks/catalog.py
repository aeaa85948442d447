"""Catalog search benchmark: search + facets latency on a 100k-product catalog (target p95 <= 50 ms).

    python -m benchmarks.catalog [--products 100000] [--queries 400] [--keep] [--write-docs]

Builds a throw-away database (`serena_bench_catalog`, migrated, seeded by
commerce.seed with the Helsinki demo catalog), then times `commerce.catalog.service.search`
— one call returns the page, the total, facet counts per attribute value, category and
price band — over a fixed, seeded mix of queries, measured from Python through
SQLAlchemy + asyncpg on the same machine (so network latency is not in the figure).
The first `--warmup` calls are not counted (cold caches are a start-up cost, not a
steady state). `--write-docs` replaces the "## Catalog search" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import time
from decimal import Decimal
from pathlib import Path

import psycopg2

from commerce import seed as seeding
from commerce.catalog import service
from core import migrate
from core.db import make_engine, make_sessionmaker

ADMIN_DSN = os.environ.get("SERENA_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = "serena_bench_catalog"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Catalog search"

WORDS = ["jacket", "cheese", "coffee", "headphones", "boots", "milk", "lamp", "tent", "knife", "gloves", "shirt",
         "bread", "juice", "charger", "helmet", "pan", "duvet", "yoghurt", "ice cream", "backpack", "running shoes"]
PAIRS = ["wool jacket", "organic coffee", "rain jacket", "winter boots", "vegan yoghurt", "cast iron pan",
         "bluetooth headphones", "merino gloves", "linen shirt", "sleeping bag", "valio milk", "iittala lamp"]
TYPOS = ["jakcet", "chese", "cofee", "headphnes", "sleping bag", "yogurt", "backpak", "lingonbery"]
FILTERS = [{"colour": ["red"]}, {"size": ["M"]}, {"material": ["wool", "merino"]}, {"diet": ["organic"]},
           {"colour": ["black"], "size": ["L"]}, {"brand": ["Halti"]}, {"connectivity": ["bluetooth"]}]


def _dsn(name: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def _recreate() -> None:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    conn.close()
    migrate.upgrade(_dsn(DB_NAME))


def _drop() -> None:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    conn.close()


def query_mix(n: int, categories: list[int], seed: int = 11) -> list[tuple[str, dict]]:
    """(kind, search kwargs) in the proportions of a shop's traffic."""
    rnd = random.Random(seed)
    mix = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.35:
            mix.append(("word", {"q": rnd.choice(WORDS)}))
        elif r < 0.55:
            mix.append(("two words", {"q": rnd.choice(PAIRS)}))
        elif r < 0.70:
            mix.append(("words + facet filter", {"q": rnd.choice(WORDS), "filters": rnd.choice(FILTERS)}))
        elif r < 0.82:
            mix.append(("category browse + filter", {"category_id": rnd.choice(categories), "filters": rnd.choice(FILTERS)}))
        elif r < 0.90:
            mix.append(("category browse", {"category_id": rnd.choice(categories)}))
        elif r < 0.96:
            mix.append(("typo (spelling correction)", {"q": rnd.choice(TYPOS)}))
        else:
            mix.append(("price band", {"q": rnd.choice(WORDS), "price_min": Decimal("25"), "price_max": Decimal("100"),
                                       "sort": "price_asc"}))
    return mix


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def run(products: int, queries: int, warmup: int, keep: bool, reuse: bool = False) -> dict:
    t0 = time.perf_counter()
    if not reuse:
        await asyncio.to_thread(_recreate)  # Alembic's env runs its own event loop
    await seeding.seed(dsn=_dsn(DB_NAME), products=products)
    build_s = time.perf_counter() - t0
    engine = make_engine(_dsn(DB_NAME), pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as db:
            from sqlalchemy import text

            cats = list((await db.execute(text("SELECT id FROM catalog_categories ORDER BY id"))).scalars())
            n_products = (await db.execute(text("SELECT count(*) FROM product_search"))).scalar_one()
            n_variants = (await db.execute(text("SELECT count(*) FROM product_variants"))).scalar_one()
        mix = query_mix(warmup + queries, cats)
        load_before = os.getloadavg()[0]
        times: dict[str, list[float]] = {}
        totals: list[int] = []
        async with sessions() as db:
            for i, (kind, kw) in enumerate(mix):
                start = time.perf_counter()
                async with db.begin():
                    result = await service.search(db=db, **kw)
                ms = (time.perf_counter() - start) * 1000
                if i >= warmup:
                    times.setdefault(kind, []).append(ms)
                    totals.append(result.total)
        load_after = os.getloadavg()[0]
    finally:
        await engine.dispose()
        if not keep:
            _drop()
    every = [t for ts in times.values() for t in ts]
    return {"products": n_products, "variants": n_variants, "build_s": build_s, "n": len(every),
            "p50": pct(every, 50), "p95": pct(every, 95), "p99": pct(every, 99), "max": max(every),
            "median_hits": statistics.median(totals), "load": (load_before, load_after),
            "by_kind": {k: (len(v), pct(v, 50), pct(v, 95)) for k, v in sorted(times.items())}}


def report(r: dict, products_flag: int, queries: int) -> str:
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks.catalog --products {products_flag} --queries {queries}` — "
        f"{r['products']:,} products, {r['variants']:,} variants (demo catalog of `commerce.seed`), "
        f"PostgreSQL 15 on {platform.machine()}, {os.cpu_count()} cores shared with other work "
        f"(1-minute load average {r['load'][0]:.1f} before the timed queries, {r['load'][1]:.1f} after). "
        "One call = page of 24 + total + facet counts (attribute values, categories, price bands), "
        "timed in Python through SQLAlchemy/asyncpg, after a warm-up.",
        "",
        f"**search + facets: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms** "
        f"over {r['n']} queries (target p95 ≤ 50 ms); median hits per query {r['median_hits']:.0f}. "
        f"Building the database took {r['build_s']:.0f} s.",
        "",
        "| query kind | n | p50 ms | p95 ms |",
        "|---|---:|---:|---:|",
    ]
    for kind, (n, p50, p95) in r["by_kind"].items():
        lines.append(f"| {kind} | {n} | {p50:.1f} | {p95:.1f} |")
    lines += ["", "How: `product_search` holds one narrow row per product (tsvector with a GIN index, an int[] of "
              "facet token ids with a GIN index, prices); a search is one round trip — a materialised CTE of the "
              "matches, ranked with `ts_rank_cd`, from which the page and the counts (`unnest` + `GROUP BY` on token "
              "ids; tokens for attribute values, every category level, price bands and the total) are aggregated. "
              "Unfiltered category browsing reads exact precomputed counts (`facet_counts`). Typos: when the words "
              "match nothing, each unknown word is corrected against the catalog's word list (Levenshtein ≤ 2) and "
              "the search runs again. The cost of a text search grows with its number of matches (each is read and "
              "counted), so broad one-word searches are the slowest kind.", ""]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    ap.add_argument("--reuse", action="store_true", help="reuse a database kept by --keep (no rebuild)")
    ap.add_argument("--write-docs", action="store_true", help="update the section in docs/benchmarks.md")
    args = ap.parse_args()
    r = asyncio.run(run(args.products, args.queries, args.warmup, args.keep or args.reuse, args.reuse))
    section = report(r, args.products, args.queries)
    print(section)
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
