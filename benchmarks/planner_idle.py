"""Planner benchmark: N drivers on duty and no jobs — what an idle fleet costs the planner.

Found by the 1,000-driver simulation (docs/simulator.md): with no jobs at all the planner used
0.34 cores and sent every driver's (empty) task list on every plan. This script creates N
drivers with open shifts directly through the service layer in a database of its own, runs
`serena planner`'s loop (`serena.commands.planner.run_planner`, without MQTT: every list goes
to Redis pub/sub as well, which is what is counted) in a child process with a short re-plan
interval, and measures over a steady window after the first plan:

- the child's CPU (user + system from /proc, in cores),
- plans written (rows in dispatch_plans) and task lists sent (messages on `{prefix}tasks:*`).

Two runs in the same invocation, on the same fleet: `before` runs the planner of commit
`--before-rev` (main just before this change, unpacked with `git archive`), `after` the code of
this checkout. The table prints both and the ratio after / before.

    flock /tmp/serena-bench.lock .venv/bin/python benchmarks/planner_idle.py [--drivers 1000]
        [--interval 10] [--window 60] [--graph ""]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import psycopg2  # noqa: E402

ADMIN_DSN = os.environ.get("SERENA_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DBNAME = "serena_bench_planner"
REPO = Path(__file__).resolve().parents[1]
BEFORE_REV = "22278d1"  # main just before task lists were published only on change (6738e1b)
HELSINKI = (60.1699, 24.9384)


def dsn(dbname: str) -> str:
    return ADMIN_DSN.rpartition("/")[0] + "/" + dbname


def fresh_database() -> str:
    from core import migrate

    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DBNAME}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{DBNAME}"')
    conn.close()
    migrate.upgrade(dsn(DBNAME))
    return dsn(DBNAME)


async def create_fleet(settings, n: int) -> None:
    """A depot and n drivers on duty around it (service.start_shift, as the API does)."""
    from core import db as dbmod
    from core.models import Depot, Driver, User
    from dispatch import service

    engine = dbmod.make_engine(settings.database_url)
    sessions = dbmod.make_sessionmaker(engine)
    async with sessions() as db, db.begin():
        db.add(Depot(name="bench depot", location=service.point(*HELSINKI)))
        for i in range(n):
            user = User(email=f"bench-{i}-{uuid.uuid4().hex[:6]}@example.test", password_hash="!bench: no sign-in")
            db.add(user)
            await db.flush()
            driver = Driver(user_id=user.id, display_name=f"bench {i}")
            db.add(driver)
            await db.flush()
            await service.start_shift(db=db, driver=driver, vehicle_id=None,
                                      lat=HELSINKI[0] + (i % 40) * 0.002, lng=HELSINKI[1] + (i // 40) * 0.002)
    await engine.dispose()


CHILD = """
import asyncio, os
from core.settings import Settings
from serena.commands.planner import run_planner
asyncio.run(run_planner(Settings.model_validate_json(os.environ["BENCH_SETTINGS"]), mqtt=False))
"""


def source_tree(rev: str | None) -> Path:
    """The code a mode runs: this checkout (None) or `git archive rev` unpacked in a temporary directory."""
    if rev is None:
        return REPO
    out = Path(tempfile.mkdtemp(prefix="planner-idle-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def start_planner(settings, tree: Path) -> subprocess.Popen:
    env = {**os.environ, "BENCH_SETTINGS": settings.model_dump_json(), "PYTHONPATH": str(tree)}
    return subprocess.Popen([sys.executable, "-c", CHILD], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(settings, mode: str, tree: Path, *, window_s: float, warmup_timeout_s: float) -> dict:
    import asyncpg
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis_url)
    pubsub = redis.pubsub()
    await pubsub.psubscribe(f"{settings.redis_prefix}tasks:*")
    pool = await asyncpg.connect(settings.asyncpg_dsn)
    plans0 = await pool.fetchval("SELECT count(*) FROM dispatch_plans")
    driver_ids = [r["id"] for r in await pool.fetch("SELECT id FROM drivers ORDER BY id")]

    async def positions() -> None:
        """What tracking does for drivers that stream: a fresh live row per driver (here every 2 s, moving a little)."""
        from core import fleetstate

        step = 0
        while True:
            now = time.time()
            await redis.hset(fleetstate.live_key(settings.redis_prefix), mapping={
                str(d): orjson.dumps({"lat": HELSINKI[0] + (i % 40) * 0.002 + step * 1e-5,
                                      "lng": HELSINKI[1] + (i // 40) * 0.002, "ts": now})
                for i, d in enumerate(driver_ids)})
            step += 1
            await asyncio.sleep(2.0)

    feeder = asyncio.create_task(positions())
    proc = start_planner(settings, tree)
    counted = 0

    async def drain(until: float) -> int:
        n = 0
        while (left := until - time.monotonic()) > 0:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 1.0))
            if msg is not None:
                n += 1
        return n

    # Warm-up: wait for the first plan (a new leader plans and sends every list once), plus a settle second.
    t0 = time.monotonic()
    while await pool.fetchval("SELECT count(*) FROM dispatch_plans") == plans0:
        await drain(time.monotonic() + 0.5)
        if proc.poll() is not None:
            raise SystemExit(f"{mode}: the planner exited with {proc.returncode}")
        if time.monotonic() - t0 > warmup_timeout_s:
            raise SystemExit(f"{mode}: no plan within {warmup_timeout_s} s")
    await drain(time.monotonic() + 3.0)
    plans1 = await pool.fetchval("SELECT count(*) FROM dispatch_plans")
    c0, w0 = cpu_s(proc.pid), time.monotonic()
    counted = await drain(w0 + window_s)
    c1, w1 = cpu_s(proc.pid), time.monotonic()
    plans2 = await pool.fetchval("SELECT count(*) FROM dispatch_plans")
    proc.terminate()
    proc.wait(10)
    feeder.cancel()
    await pubsub.aclose()
    await redis.aclose()
    await pool.close()
    minutes = (w1 - w0) / 60
    return {"cores": (c1 - c0) / (w1 - w0), "plans_per_min": (plans2 - plans1) / minutes, "lists_per_min": counted / minutes,
            "window_s": w1 - w0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=10.0, help="SERENA_DISPATCH_REPLAN_INTERVAL_S for the run (default 60 in production)")
    ap.add_argument("--window", type=float, default=60.0, help="steady window measured per mode (s)")
    ap.add_argument("--before-rev", default=BEFORE_REV, help="the commit measured as `before`")
    ap.add_argument("--graph", default=None, help="dispatch graph (default: the settings' default, the Helsinki extract)")
    args = ap.parse_args()

    from core.settings import Settings

    url = fresh_database()
    update = {"database_url": url, "redis_prefix": f"bench-planner-{uuid.uuid4().hex[:6]}:",
              "dispatch_region": "bench", "dispatch_replan_interval_s": args.interval}
    if args.graph is not None:
        update["dispatch_graph"] = args.graph
    settings = Settings(env="test").model_copy(update=update)
    t = time.perf_counter()
    asyncio.run(create_fleet(settings, args.drivers))
    print(f"{args.drivers} drivers on duty, no jobs; created in {time.perf_counter() - t:.1f} s; re-plan interval {args.interval} s, "
          f"window {args.window} s per mode; load average {os.getloadavg()[0]:.2f}")
    rows = {}
    trees = {"before": source_tree(args.before_rev), "after": source_tree(None)}
    for mode in ("before", "after"):
        settings_m = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}{mode}:",
                                                 "dispatch_region": f"bench-{mode}"})
        rows[mode] = asyncio.run(measure(settings_m, mode, trees[mode], window_s=args.window, warmup_timeout_s=300))
    b, a = rows["before"], rows["after"]
    print(f"{'what':<28} {'before':>10} {'after':>10} {'after/before':>13}")
    for key, name in (("cores", "planner CPU (cores)"), ("plans_per_min", "plans written / min"),
                      ("lists_per_min", "task lists sent / min")):
        ratio = a[key] / b[key] if b[key] else float("nan")
        print(f"{name:<28} {b[key]:>10.3f} {a[key]:>10.3f} {ratio:>13.3f}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(trees["before"], ignore_errors=True)
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DBNAME}" WITH (FORCE)')
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
