"""`serena load`: run Locust headless with a bounded profile, print per-endpoint figures, check the budgets.

Budgets are the product's promises: every API endpoint p95 < 200 ms; checkout p95 ≤ 200 ms
at 100 requests/s; catalog p95 ≤ 50 ms at 500 requests/s. A latency budget is checked in
every profile; the rate it is promised at only in `peak` — a peak run that did not reach
the rate has not shown the promise, and that counts as a miss too (exit 1). The rate is
the steady state (from the end of the ramp-up to the end, read from Locust's per-second
history), not the whole-run average that the ramp-up drags down.

`peak` OFFERS the promised rates (constant-throughput users, see load/locustfile.py): 100
catalog readers at 5 requests/s and 100 buyers at one purchase a second, plus drivers,
trackers and dispatchers. The runner also reports where the CPU went during the run
(Locust's processes, the API's processes, the whole machine) and the load average, so a
generator or a neighbour that starved the platform shows in the figures.
"""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Profile:
    """One Locust run: how many users of each kind, at what rates, for how long."""

    run_time_s: int
    spawn_rate: float
    catalog_users: int  # catalog readers, each at catalog_rps requests/s
    catalog_rps: float
    buyers: int  # buyers, each starting buy_rate purchases/s
    buy_rate: float
    drivers: int  # MQTT driver accounts created at start, one Driver user each
    trackers: int
    dispatchers: int
    links: int  # tracking links created at start (trackers pick one at random)
    check_rates: bool
    name: str = ""  # the phase's name in a multi-phase profile

    @property
    def users(self) -> int:
        return self.catalog_users + self.buyers + self.drivers + self.trackers + self.dispatchers

    @property
    def user_classes(self) -> list[str]:
        """The locustfile classes this run uses (Locust runs only these: a class with no users is not started)."""
        counts = {"CatalogReader": self.catalog_users, "Buyer": self.buyers, "Driver": self.drivers,
                  "Tracker": self.trackers, "Dispatcher": self.dispatchers}
        return [k for k, n in counts.items() if n > 0]

    @property
    def offered(self) -> str:
        return (f"catalog {self.catalog_users * self.catalog_rps:.0f} req/s offered ({self.catalog_users} readers), "
                f"checkout {self.buyers * self.buy_rate:.0f}/s offered ({self.buyers} buyers), "
                f"{self.drivers} MQTT drivers, {self.trackers} trackers, {self.dispatchers} fleet boards")


def _catalog_phase(rps: float, run_time_s: int = 60, *, check_rates: bool = True) -> Profile:
    """Catalog readers only (5 req/s each), at `rps` offered."""
    return Profile(run_time_s=run_time_s, spawn_rate=100, catalog_users=max(1, round(rps / 5)), catalog_rps=5, buyers=0,
                   buy_rate=1.0, drivers=0, trackers=0, dispatchers=0, links=0, check_rates=check_rates,
                   name=f"catalog {rps:.0f} req/s")


def _checkout_phase(rps: float, run_time_s: int = 60, *, check_rates: bool = True) -> Profile:
    """Buyers only (one purchase a second each: cart, line, quote, card token, checkout), at `rps` checkouts offered."""
    return Profile(run_time_s=run_time_s, spawn_rate=100, catalog_users=0, catalog_rps=5, buyers=max(1, round(rps)),
                   buy_rate=1.0, drivers=0, trackers=0, dispatchers=0, links=0, check_rates=check_rates,
                   name=f"checkout {rps:.0f} req/s")


PROFILES = {
    "smoke": Profile(run_time_s=30, spawn_rate=20, catalog_users=4, catalog_rps=2, buyers=2, buy_rate=0.25,
                     drivers=4, trackers=2, dispatchers=1, links=5, check_rates=False),
    "peak": Profile(run_time_s=90, spawn_rate=100, catalog_users=100, catalog_rps=5, buyers=100, buy_rate=1.0,
                    drivers=40, trackers=20, dispatchers=4, links=20, check_rates=True, name="mixed"),
}
# `peak` measures each promise at its own rate first (catalog alone at 500 req/s, checkout alone at
# 100 req/s), then everything at once; a miss in any phase is a miss (exit 1).
PHASES = {"peak": [_catalog_phase(500), _checkout_phase(100), PROFILES["peak"]]}


def phases_for(profile: str) -> list[Profile] | None:
    """The runs of a profile: smoke | peak | catalog:<req/s> | checkout:<req/s> (the last two: one phase, latency budgets only)."""
    if profile in PHASES:
        return PHASES[profile]
    if profile in PROFILES:
        return [PROFILES[profile]]
    kind, _, rate = profile.partition(":")
    try:
        rps = float(rate)
    except ValueError:
        return None
    if rps <= 0 or rps > 2000:
        return None
    if kind == "catalog":
        return [_catalog_phase(rps, check_rates=False)]
    if kind == "checkout":
        return [_checkout_phase(rps, check_rates=False)]
    return None


WARMUP_S = 10.0  # steady-state rates are counted from this long after the start

API_P95_MS = 200.0
CHECKOUT = ("POST /v1/checkout", 200.0, 100.0)  # name, p95 ms, at requests/s
CATALOG_PREFIX, CATALOG_P95_MS, CATALOG_RPS = "GET /v1/catalog/", 50.0, 500.0
NOT_THE_PLATFORM = ("localstripe",)  # request names of calls the load test makes to other services


def _platform_http(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["Type"] in ("GET", "POST", "PUT", "DELETE") and r["Name"] != "Aggregated"
            and not r["Name"].startswith(NOT_THE_PLATFORM)]


def budgets(rows: list[dict], *, check_rates: bool, rates: dict[str, float] | None = None) -> list[tuple[str, bool, str]]:
    """(budget, met, detail) for each promise, from Locust's per-endpoint rows.

    `rates` (endpoint name → steady-state req/s) replaces the whole-run average of the rows when given.
    """
    def rate(r: dict) -> float:
        return rates[r["Name"]] if rates and r["Name"] in rates else float(r["Requests/s"])

    out = []
    http = _platform_http(rows)
    for r in http:
        p95 = float(r["95%"])
        out.append((f"{r['Name']} p95 < {API_P95_MS:.0f} ms", p95 < API_P95_MS, f"p95 {p95:.0f} ms"))
    co = next((r for r in http if r["Name"] == CHECKOUT[0]), None)
    if co is not None:
        p95, rps = float(co["95%"]), rate(co)
        fails = int(co["Failure Count"])
        out.append((f"checkout p95 ≤ {CHECKOUT[1]:.0f} ms", p95 <= CHECKOUT[1],
                    f"p95 {p95:.0f} ms at {rps:.1f} req/s, {fails} failed"))
        if check_rates:
            out.append((f"checkout at {CHECKOUT[2]:.0f} req/s", rps >= CHECKOUT[2], f"reached {rps:.1f} req/s"))
    cat = [r for r in http if r["Name"].startswith(CATALOG_PREFIX)]
    if cat:
        n = sum(int(r["Request Count"]) for r in cat)
        rps = sum(rate(r) for r in cat)
        worst = max(float(r["95%"]) for r in cat)
        out.append((f"catalog p95 ≤ {CATALOG_P95_MS:.0f} ms", worst <= CATALOG_P95_MS,
                    f"worst endpoint p95 {worst:.0f} ms over {n} requests at {rps:.1f} req/s"))
        if check_rates:
            out.append((f"catalog at {CATALOG_RPS:.0f} req/s", rps >= CATALOG_RPS, f"reached {rps:.1f} req/s"))
    return out


def steady_rates(history: list[dict], *, warmup_s: float = WARMUP_S) -> dict[str, float]:
    """Per endpoint, requests/s between `warmup_s` after the first sample and the last sample (Locust's full history)."""
    by_name: dict[str, list[tuple[float, int]]] = {}
    for r in history:
        if r.get("Name") in (None, "", "Aggregated") or r.get("Total Request Count") in (None, "", "N/A"):
            continue
        by_name.setdefault(r["Name"], []).append((float(r["Timestamp"]), int(r["Total Request Count"])))
    if not by_name:
        return {}
    t_start = min(t for samples in by_name.values() for t, _ in samples)
    out = {}
    for name, samples in by_name.items():
        samples.sort()
        after = [s for s in samples if s[0] >= t_start + warmup_s]
        if len(after) >= 2 and after[-1][0] > after[0][0]:
            out[name] = (after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0])
    return out


def table(rows: list[dict], rates: dict[str, float] | None = None) -> str:
    lines = [f"{'type':<6} {'endpoint':<48} {'reqs':>7} {'fail':>5} {'req/s':>7} {'steady':>7} {'p50':>6} {'p95':>6} {'p99':>6}"]
    for r in rows:
        steady = f"{rates[r['Name']]:.1f}" if rates and r["Name"] in rates else ""
        lines.append(f"{r['Type'][:6]:<6} {r['Name'][:48]:<48} {r['Request Count']:>7} {r['Failure Count']:>5} "
                     f"{float(r['Requests/s']):>7.1f} {steady:>7} {r['50%']:>6} {r['95%']:>6} {r['99%']:>6}")
    return "\n".join(lines)


def _cpu_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / hz, sum(fields) / hz


def _listeners(port: int) -> list:
    """The processes listening on `port` (the API's workers), for their CPU time; empty when psutil cannot tell."""
    try:
        import psutil

        pids = {c.pid for c in psutil.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
        procs = []
        for pid in pids:  # the kernel reports a shared socket under one of its processes: climb to uvicorn's master
            proc = psutil.Process(pid)
            while (parent := proc.parent()) is not None and "uvicorn" in " ".join(parent.cmdline()):
                proc = parent
            procs += [proc, *proc.children(recursive=True)]
        return list({p.pid: p for p in procs}.values())
    except Exception:  # noqa: BLE001 - permissions or no psutil: the figure is left out, not guessed
        return []


def _proc_cpu_s(procs: list) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001 - a worker that exited
            pass
    return total


# Process kinds whose CPU the runner reports (command-line needle -> label). Narrowed to the platform
# under test where the runner can tell (see _scope); otherwise every instance on the machine counts
# (other databases' Postgres backends, a test's localstripe, another platform's planner).
KINDS = (("postgres", "Postgres"), ("localstripe", "localstripe"), ("serena.cli planner", "planner"),
         ("serena.cli worker", "worker"), ("serena.cli ingest", "ingest"), ("serena.cli events relay", "relay"),
         ("serena.cli commerce consume", "commerce consumer"))


@dataclass(frozen=True)
class Scope:
    """What belongs to the platform under test: its supervisor's process tree, its database, its localstripe's port."""

    serena_pids: frozenset[int] | None = None  # descendants of the `serena up` running the API; None: unknown
    database: str = ""  # Postgres backends of this database only ("": every postgres process)
    stripe_port: str = ""  # the localstripe whose command line ends with this port ("": every localstripe)


def _scope(api: list, env: dict[str, str]) -> Scope:
    """The platform's scope, from the API's processes (their `serena up` parent) and SERENA_DATABASE_URL / _STRIPE_API_BASE."""
    pids = None
    try:
        for proc in api:
            parent = proc.parent()
            if parent is not None and "serena up" in " ".join(parent.cmdline()):
                pids = frozenset(p.pid for p in parent.children(recursive=True))
                break
    except Exception:  # noqa: BLE001 - a process that exited, or no permission: fall back to every instance
        pids = None
    database = urlsplit(env["SERENA_DATABASE_URL"]).path.lstrip("/") if env.get("SERENA_DATABASE_URL") else ""
    port = str(urlsplit(env["SERENA_STRIPE_API_BASE"]).port or "") if env.get("SERENA_STRIPE_API_BASE") else ""
    return Scope(pids, database, port)


def _in_scope(label: str, pid: int, line: str, scope: Scope) -> bool:
    if label == "Postgres":
        # A backend's title is "postgres: <cluster>: <user> <database> <client> <state>"; the server's own
        # processes (checkpointer, WAL writer, ...) name no database and are shared: they are left out too.
        return not scope.database or f" {scope.database} " in line
    if label == "localstripe":
        return not scope.stripe_port or line.rstrip().endswith(f" {scope.stripe_port}")
    return scope.serena_pids is None or pid in scope.serena_pids


def _kind_cpu(exclude: set[int], scope: Scope = Scope()) -> dict[str, dict[int, float]]:
    """label -> {pid: CPU seconds so far} for the processes of each kind in KINDS within `scope` (psutil; empty without it)."""
    out: dict[str, dict[int, float]] = {label: {} for _, label in KINDS}
    try:
        import psutil

        for proc in psutil.process_iter(["cmdline", "name", "cpu_times"]):
            if proc.pid in exclude or proc.info["cpu_times"] is None:
                continue
            line = " ".join(proc.info["cmdline"] or ()) or (proc.info["name"] or "")
            for needle, label in KINDS:
                if needle in line:
                    if _in_scope(label, proc.pid, line, scope):
                        t = proc.info["cpu_times"]
                        out[label][proc.pid] = t.user + t.system
                    break
    except Exception:  # noqa: BLE001 - no psutil: the figures are left out, not guessed
        pass
    return out


def _scope_note(label: str, scope: Scope) -> str:
    if label == "Postgres":
        return f", backends of {scope.database}" if scope.database else ", all on the machine"
    if label == "localstripe":
        return f", port {scope.stripe_port}" if scope.stripe_port else ", all on the machine"
    return ", this platform's" if scope.serena_pids is not None else ", all on the machine"


def _kind_delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, tuple[int, float]]:
    """label -> (processes, CPU seconds during the run); a process started during the run counts from zero."""
    return {label: (len(now), sum(cpu - before.get(label, {}).get(pid, 0.0) for pid, cpu in now.items()))
            for label, now in after.items() if now}


def run(*, profile: str, host: str, out_dir: Path, processes: int = 1, run_time_s: int | None = None) -> int:
    phases = phases_for(profile)
    if phases is None:
        print(f"error: unknown profile {profile!r}; known: {', '.join(PROFILES)}, catalog:<req/s>, checkout:<req/s>",
              file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, p in enumerate(phases):
        if len(phases) > 1:
            print(f"\n=== phase {i + 1}/{len(phases)}: {p.name} ===")
        code = _run_phase(p, profile=profile, host=host, out_dir=out_dir, processes=processes, run_time_s=run_time_s)
        if code == 2:
            return 2
        results.append((p.name or profile, code))
    if len(phases) > 1:
        print("\n=== phases ===")
        for name, code in results:
            print(f"{'ok  ' if code == 0 else 'MISS'}  {name}")
    return 1 if any(code for _, code in results) else 0


def _run_phase(p: Profile, *, profile: str, host: str, out_dir: Path, processes: int, run_time_s: int | None) -> int:
    duration = run_time_s or p.run_time_s
    tag = (p.name or profile).replace(" ", "-").replace("/", "")
    prefix = out_dir / f"{profile.replace(':', '-')}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    env = {**os.environ, "LOAD_DRIVERS": str(p.drivers), "LOAD_LINKS": str(p.links),
           "LOAD_CATALOG_USERS": str(p.catalog_users), "LOAD_CATALOG_RPS": str(p.catalog_rps),
           "LOAD_BUYERS": str(p.buyers), "LOAD_BUY_RATE": str(p.buy_rate),
           "LOAD_TRACKERS": str(p.trackers), "LOAD_DISPATCHERS": str(p.dispatchers)}
    cmd = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "--host", host,
           "-u", str(p.users), "-r", str(p.spawn_rate), "-t", f"{duration}s", "--stop-timeout", "5",
           "--csv", str(prefix), "--csv-full-history", "--only-summary", "--loglevel", "WARNING"]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    cmd += p.user_classes
    print(f"locust: {p.users} users ({p.offered}), {duration} s against {host}"
          + (f", {processes} processes" if processes > 1 else ""))
    api = _listeners(urlsplit(host).port or 80)
    api_pids = {q.pid for q in api}
    scope = _scope(api, dict(os.environ))
    kinds0 = _kind_cpu(api_pids, scope)
    api_cpu0, (busy0, total0) = _proc_cpu_s(api), _cpu_busy_s()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    log = Path(f"{prefix}_locust.log")
    with log.open("w") as f:  # Locust's own summary repeats ours; its warnings and errors stay in the log
        code = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = _cpu_busy_s()
    api_cpu = _proc_cpu_s(api) - api_cpu0
    kinds = _kind_delta(kinds0, _kind_cpu(api_pids, scope))
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        print(log.read_text()[-3000:], file=sys.stderr)
        print(f"error: locust wrote no statistics (exit {code})", file=sys.stderr)
        return 2
    setup = [line for line in log.read_text().splitlines() if line.startswith("load setup")]
    print("\n".join(setup))
    errors = Path(f"{prefix}_exceptions.csv")
    if errors.exists():
        with errors.open() as f:
            for e in csv.DictReader(f):
                print(f"user error x{e['Count']}: {e['Message'][:160]}")
    with stats.open() as f:
        rows = list(csv.DictReader(f))
    history = Path(f"{prefix}_stats_history.csv")
    rates: dict[str, float] = {}
    if history.exists():
        with history.open() as f:
            rates = steady_rates(list(csv.DictReader(f)))
    print()
    print(table(rows, rates))
    print()
    locust_cpu = (kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime) / wall
    ncpu = os.cpu_count() or 1
    machine = (busy1 - busy0) / max(total1 - total0, 1e-9) * ncpu
    load1, load5, _ = os.getloadavg()
    print(f"CPU over the run ({wall:.0f} s, {ncpu} cores): Locust {locust_cpu:.2f} cores, "
          + (f"API ({len(api)} processes on the port) {api_cpu / wall:.2f} cores, " if api else "API: not measured, ")
          + "".join(f"{label} ({n} processes{_scope_note(label, scope)}) {cpu / wall:.2f} cores, "
                    for label, (n, cpu) in kinds.items())
          + f"whole machine {machine:.2f} cores busy; load average {load1:.2f} (1 min) {load5:.2f} (5 min)")
    print()
    verdicts = budgets(rows, check_rates=p.check_rates, rates=rates)
    for name, met, detail in verdicts:
        print(f"{'ok  ' if met else 'MISS'}  {name:<44} {detail}")
    missed = [v for v in verdicts if not v[1]]
    print(f"\n{len(verdicts) - len(missed)}/{len(verdicts)} budgets met in {wall:.0f} s; CSV: {prefix}_stats.csv")
    return 1 if missed else 0
