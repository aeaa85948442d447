"""`serena load`: run Locust headless with a bounded profile, print per-endpoint figures, check the budgets.

Budgets are the product's promises: every API endpoint p95 < 200 ms; checkout p95 ≤ 200 ms
at 100 requests/s; catalog p95 ≤ 50 ms at 500 requests/s. A latency budget is checked in
every profile; the rate it is promised at only in `peak` — a peak run that did not reach
the rate has not shown the promise, and that counts as a miss too (exit 1).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Profile:
    users: int
    spawn_rate: float
    run_time_s: int
    drivers: int  # MQTT driver accounts created at start (each Driver user takes one, round robin)
    links: int
    check_rates: bool


PROFILES = {
    "smoke": Profile(users=14, spawn_rate=7, run_time_s=30, drivers=4, links=5, check_rates=False),
    "peak": Profile(users=140, spawn_rate=20, run_time_s=90, drivers=40, links=40, check_rates=True),
}

API_P95_MS = 200.0
CHECKOUT = ("POST /v1/checkout", 200.0, 100.0)  # name, p95 ms, at requests/s
CATALOG_PREFIX, CATALOG_P95_MS, CATALOG_RPS = "GET /v1/catalog/", 50.0, 500.0


def budgets(rows: list[dict], *, check_rates: bool) -> list[tuple[str, bool, str]]:
    """(budget, met, detail) for each promise, from Locust's per-endpoint rows."""
    out = []
    http = [r for r in rows if r["Type"] in ("GET", "POST", "PUT", "DELETE") and r["Name"] != "Aggregated"]
    for r in http:
        p95 = float(r["95%"])
        out.append((f"{r['Name']} p95 < {API_P95_MS:.0f} ms", p95 < API_P95_MS, f"p95 {p95:.0f} ms"))
    co = next((r for r in http if r["Name"] == CHECKOUT[0]), None)
    if co is not None:
        p95, rps = float(co["95%"]), float(co["Requests/s"])
        out.append((f"checkout p95 ≤ {CHECKOUT[1]:.0f} ms", p95 <= CHECKOUT[1], f"p95 {p95:.0f} ms at {rps:.1f} req/s"))
        if check_rates:
            out.append((f"checkout at {CHECKOUT[2]:.0f} req/s", rps >= CHECKOUT[2], f"reached {rps:.1f} req/s"))
    cat = [r for r in http if r["Name"].startswith(CATALOG_PREFIX)]
    if cat:
        n = sum(int(r["Request Count"]) for r in cat)
        rps = sum(float(r["Requests/s"]) for r in cat)
        worst = max(float(r["95%"]) for r in cat)
        out.append((f"catalog p95 ≤ {CATALOG_P95_MS:.0f} ms", worst <= CATALOG_P95_MS,
                    f"worst endpoint p95 {worst:.0f} ms over {n} requests at {rps:.1f} req/s"))
        if check_rates:
            out.append((f"catalog at {CATALOG_RPS:.0f} req/s", rps >= CATALOG_RPS, f"reached {rps:.1f} req/s"))
    return out


def table(rows: list[dict]) -> str:
    lines = [f"{'type':<6} {'endpoint':<48} {'reqs':>7} {'fail':>5} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}"]
    for r in rows:
        lines.append(f"{r['Type'][:6]:<6} {r['Name'][:48]:<48} {r['Request Count']:>7} {r['Failure Count']:>5} "
                     f"{float(r['Requests/s']):>7.1f} {r['50%']:>6} {r['95%']:>6} {r['99%']:>6}")
    return "\n".join(lines)


def run(*, profile: str, host: str, out_dir: Path) -> int:
    if profile not in PROFILES:
        print(f"error: unknown profile {profile!r}; known: {', '.join(PROFILES)}", file=sys.stderr)
        return 2
    p = PROFILES[profile]
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    env = {**os.environ, "LOAD_DRIVERS": str(p.drivers), "LOAD_LINKS": str(p.links)}
    cmd = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "--host", host,
           "-u", str(p.users), "-r", str(p.spawn_rate), "-t", f"{p.run_time_s}s", "--stop-timeout", "5",
           "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]
    print(f"locust: {p.users} users, spawn {p.spawn_rate}/s, {p.run_time_s} s against {host}")
    t0 = time.time()
    code = subprocess.call(cmd, env=env)
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        print(f"error: locust wrote no statistics (exit {code})", file=sys.stderr)
        return 2
    with stats.open() as f:
        rows = list(csv.DictReader(f))
    print()
    print(table(rows))
    print()
    verdicts = budgets(rows, check_rates=p.check_rates)
    for name, met, detail in verdicts:
        print(f"{'ok  ' if met else 'MISS'}  {name:<44} {detail}")
    missed = [v for v in verdicts if not v[1]]
    print(f"\n{len(verdicts) - len(missed)}/{len(verdicts)} budgets met in {time.time() - t0:.0f} s; CSV: {prefix}_stats.csv")
    return 1 if missed else 0
