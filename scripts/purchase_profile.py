"""What one purchase costs the API, request by request: SQL statements, round trips, CPU, and (optionally) a profile.

    .venv/bin/python scripts/purchase_profile.py --purchases 200
    .venv/bin/python scripts/purchase_profile.py --purchases 200 --profile var/purchase-profile.html  # pyinstrument

Runs the app in this process (`serena.app.create_app`, the real middleware and routers) on a
database of its own (default serena_prof: dropped, migrated and seeded with the shop
`scripts/load-platform.sh` uses, stock raised so it never sells out) and a private in-memory
localstripe, and makes the Locust buyer's purchase N times one after the other: POST /v1/cart,
PUT /v1/cart/lines/{id}, POST /v1/checkout/quote, POST /v1/checkout, then the webhook Stripe sends
for the intent (signed here, as localstripe would, and posted to /v1/payments/stripe/webhook).
No planner, worker or relay runs: this is the API's share of a purchase only. Statements on the
asyncpg pool (app.state.pg_pool) are counted too: one round trip each, no ping, no BEGIN/COMMIT.

Per endpoint it prints the mean of: SQL statements (SQLAlchemy cursor executes), pool checkouts
(each one is a `pool_pre_ping` round trip), transactions (BEGIN and COMMIT, a round trip each),
and CPU milliseconds of this process (time.process_time around the request: the client's part,
httpx over ASGI, is included and is small). A load-generating run measures rates; this measures
cost with no queueing, so two versions of the code can be compared on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import json
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CENTRE = (60.1699, 24.9384)
_LOCALSTRIPE = (
    "import sys, localstripe.resources as r; r.Store.dump_to_disk = lambda self: None; "
    "from localstripe.server import start; sys.argv = ['localstripe', '--port', sys.argv[1], '--from-scratch']; start()"
)

current = contextvars.ContextVar("endpoint", default="(other)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_db(admin_dsn: str, name: str, products: int) -> str:
    import psycopg2

    from commerce import seed as seeding
    from core import migrate

    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    dsn = admin_dsn.rpartition("/")[0] + "/" + name
    migrate.upgrade(dsn)
    asyncio.run(seeding.seed(dsn=dsn, products=products))
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    conn.cursor().execute("UPDATE stock SET quantity = 1000000 WHERE quantity > 0")
    conn.close()
    return dsn


def sign(secret: str, event: dict) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    ts = int(time.time())
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={ts},v1={sig}"


async def main(args) -> None:
    import httpx
    from sqlalchemy import event

    from core.settings import Settings
    from serena.app import create_app

    settings = Settings(database_url=args.dsn, stripe_api_base=args.stripe, redis_prefix=f"serena-prof-{uuid.uuid4().hex[:6]}:",
                        log_level="WARNING")
    app = create_app(settings)
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    async with app.router.lifespan_context(app):
        engine = app.state.engine.sync_engine

        @event.listens_for(engine, "before_cursor_execute")
        def _stmt(conn, cursor, statement, parameters, context, executemany):
            stats[current.get()]["statements"] += 1
            if args.show_sql:
                print(f"  [{current.get()}] {' '.join(statement.split())[:160]}")

        @event.listens_for(engine, "begin")
        def _begin(conn):
            stats[current.get()]["transactions"] += 1

        @event.listens_for(engine.pool, "checkout")
        def _checkout(dbapi_conn, rec, proxy):
            stats[current.get()]["checkouts"] += 1

        class CountingPool:
            """app.state.pg_pool, counting its statements (each one round trip: no ping, no BEGIN/COMMIT)."""

            def __init__(self, pool) -> None:
                self._pool = pool

            def __getattr__(self, name):
                attr = getattr(self._pool, name)
                if name == "acquire":  # a connection taken from the pool counts the same way
                    @contextlib.asynccontextmanager
                    async def acquire(*a, **kw):
                        async with attr(*a, **kw) as conn:
                            yield CountingPool(conn)
                    return acquire
                if name in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
                    async def counted(*a, **kw):
                        stats[current.get()]["statements"] += 1
                        stats[current.get()]["pool"] += 1
                        if args.show_sql:
                            print(f"  [{current.get()}] (pool) {' '.join(str(a[0]).split())[:150]}")
                        return await attr(*a, **kw)
                    return counted
                return attr

        app.state.pg_pool = CountingPool(app.state.pg_pool)
        transport = httpx.ASGITransport(app=app)
        stripe = httpx.AsyncClient(base_url=args.stripe, headers={"Authorization": "Bearer sk_test_prof"})
        async with httpx.AsyncClient(transport=transport, base_url="http://prof") as c:
            r = await c.get("/v1/catalog/search", params={"page": 1})
            variants = []
            for item in r.json()["items"][:10]:
                p = (await c.get(f"/v1/catalog/products/{item['slug']}")).json()
                variants += [v["id"] for v in p["variants"] if v.get("in_stock")]
            rnd = random.Random(1)

            async def call(name: str, method: str, url: str, **kw) -> httpx.Response:
                token = current.set(name)
                t0 = time.process_time()
                try:
                    resp = await c.request(method, url, **kw)
                finally:
                    stats[name]["cpu_ms"] += (time.process_time() - t0) * 1000
                    stats[name]["n"] += 1
                    current.reset(token)
                if resp.status_code >= 400:
                    raise RuntimeError(f"{name}: {resp.status_code} {resp.text[:300]}")
                return resp

            profiler = None
            if args.profile:
                from pyinstrument import Profiler

                profiler = Profiler(async_mode="enabled", interval=0.0005)
            for i in range(args.warmup + args.purchases):
                if i == args.warmup:
                    stats.clear()
                    if profiler:
                        profiler.start()
                cart = (await call("POST /v1/cart", "POST", "/v1/cart", json={})).json()
                h = {"X-Cart-Token": cart["token"]}
                await call("PUT /v1/cart/lines/{id}", "PUT", f"/v1/cart/lines/{rnd.choice(variants)}", json={"quantity": 1}, headers=h)
                lat, lng = CENTRE[0] + rnd.uniform(-0.01, 0.01), CENTRE[1] + rnd.uniform(-0.02, 0.02)
                q = (await call("POST /v1/checkout/quote", "POST", "/v1/checkout/quote", json={"lat": lat, "lng": lng})).json()
                pm = (await stripe.post("/v1/payment_methods", data={"type": "card", "card[number]": "4242424242424242",
                                                                     "card[exp_month]": "12", "card[exp_year]": "2030",
                                                                     "card[cvc]": "123"})).json()
                order = (await call("POST /v1/checkout", "POST", "/v1/checkout",
                                    headers={**h, "Idempotency-Key": uuid.uuid4().hex},
                                    json={"email": f"prof{i}@example.test", "name": "Profile Shopper", "address": "Load street 1",
                                          "lat": lat, "lng": lng, "window_start": q["windows"][0]["start"],
                                          "payment_method": "card", "payment_method_id": pm["id"]})).json()
                ref = order["payment"]["provider_ref"]
                pi = (await stripe.get(f"/v1/payment_intents/{ref}")).json()
                body, sig = sign(settings.stripe_webhook_secret, {
                    "id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": "payment_intent.succeeded",
                    "created": int(time.time()), "api_version": "2020-08-27", "data": {"object": pi}})
                await call("POST /v1/payments/stripe/webhook", "POST", "/v1/payments/stripe/webhook", content=body,
                           headers={"Stripe-Signature": sig, "Content-Type": "application/json"})
            if profiler:
                profiler.stop()
                Path(args.profile).write_text(profiler.output_html())
                print(profiler.output_text(unicode=False, color=False, show_all=False)[:args.profile_chars])
        await stripe.aclose()

    n = args.purchases
    print(f"\n{n} purchases, means per request (statements = SQL executes, on a session or the asyncpg pool; "
          "round trips = statements + BEGIN/COMMIT + pool pings)")
    print(f"{'endpoint':<36} {'stmts':>6} {'txns':>5} {'pings':>6} {'trips':>6} {'CPU ms':>7}")
    tot = defaultdict(float)
    for name in ("POST /v1/cart", "PUT /v1/cart/lines/{id}", "POST /v1/checkout/quote", "POST /v1/checkout",
                 "POST /v1/payments/stripe/webhook"):
        s = stats[name]
        k = max(s["n"], 1)
        trips = s["statements"] + 2 * s["transactions"] + s["checkouts"]
        for key, v in (("statements", s["statements"]), ("transactions", s["transactions"]), ("checkouts", s["checkouts"]),
                       ("trips", trips), ("cpu_ms", s["cpu_ms"])):
            tot[key] += v / k
        print(f"{name:<36} {s['statements'] / k:>6.1f} {s['transactions'] / k:>5.1f} {s['checkouts'] / k:>6.1f} "
              f"{trips / k:>6.1f} {s['cpu_ms'] / k:>7.2f}")
    print(f"{'a purchase':<36} {tot['statements']:>6.1f} {tot['transactions']:>5.1f} {tot['checkouts']:>6.1f} "
          f"{tot['trips']:>6.1f} {tot['cpu_ms']:>7.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--purchases", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--db", default="serena_prof")
    ap.add_argument("--products", type=int, default=200)
    ap.add_argument("--reuse", action="store_true", help="keep the database as it is (no drop, migrate, seed)")
    ap.add_argument("--profile", default="", help="write a pyinstrument HTML profile of the measured purchases here")
    ap.add_argument("--profile-chars", type=int, default=12000)
    ap.add_argument("--show-sql", action="store_true", help="print each statement (use with --purchases 1 --warmup 1)")
    a = ap.parse_args()
    if a.db in ("serena", "postgres", "serena_load"):
        sys.exit(f"refusing to use database {a.db}")
    a.dsn = (a.admin_dsn.rpartition("/")[0] + "/" + a.db) if a.reuse else fresh_db(a.admin_dsn, a.db, a.products)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _LOCALSTRIPE, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a.stripe = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(150):
            try:
                httpx.get(a.stripe + "/v1/customers", headers={"Authorization": "Bearer sk_test_x"}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(main(a))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
