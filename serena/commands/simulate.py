"""`serena simulate` (the seeded city simulation and its grade) and `serena load` (Locust, headless, bounded).

Both talk to a running platform only through its public interfaces (127.0.0.1 by default).
The simulator signs in as an admin: `--admin-email/--admin-password/--admin-totp-secret`
or SERENA_SIM_ADMIN_EMAIL / _PASSWORD / _TOTP_SECRET (`make demo` creates that admin with
`serena users create-admin` and a fixed development TOTP secret).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

app = typer.Typer()

DEV_ADMIN_EMAIL = "admin@serena.local"


def parse_duration(text: str) -> float:
    """`2h`, `90m`, `45s`, `1h30m` or plain seconds → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise typer.BadParameter(f"not a duration: {text!r} (e.g. 2h, 90m, 1h30m, 45s)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@app.command("simulate")
def simulate(
    city: str = typer.Option("default", help="'default' (bundled Helsinki), 'none' (straight lines) or an OSM file / graph dir"),
    drivers: int = typer.Option(50, min=1, max=5000),
    orders_per_hour: float = typer.Option(300.0, min=0),
    speedup: float = typer.Option(1.0, min=0.1, max=100, help="simulated seconds per wall second (ingest refuses >70 m/s: keep ≤5 to grade GPS)"),
    duration: str = typer.Option("2h", help="simulated time during which customers order (e.g. 2h, 30m)"),
    seed: int = typer.Option(42),
    noise_m: float = typer.Option(8.0, help="GPS error, 1-sigma metres per axis"),
    transport: str = typer.Option("mqtt", help="fixes over 'mqtt' (QoS 1, per-driver credentials) or 'ws' (/ws/driver)"),
    tasks: str = typer.Option("", help="task lists over 'mqtt' (retained) or 'poll' (HTTP); default: same as transport"),
    commerce_share: float = typer.Option(0.0, min=0, max=1, help="share of orders placed through the shop (guest checkout + localstripe)"),
    watch_share: float = typer.Option(0.3, min=0, max=1, help="share of customers holding the tracking WebSocket"),
    start_hour: float = typer.Option(10.0, help="local hour at which the simulated day starts"),
    drain: float = typer.Option(900.0, help="wall seconds to wait after the last order for every order to end"),
    no_orders: bool = typer.Option(False, "--no-orders", help="drivers only (the scale run: 1 Hz fixes, nobody orders)"),
    smoke: bool = typer.Option(False, "--smoke", help="a run shorter than a minute: 3 drivers, a few orders, fast clock"),
    base_url: str = typer.Option("", help="API base URL (default SERENA_SIM_BASE_URL or http://127.0.0.1:8000)"),
    admin_email: str = typer.Option("", help="default SERENA_SIM_ADMIN_EMAIL or admin@serena.local"),
    admin_password: str = typer.Option("", help="default SERENA_SIM_ADMIN_PASSWORD"),
    admin_totp_secret: str = typer.Option("", help="default SERENA_SIM_ADMIN_TOTP_SECRET"),
    out: Path = typer.Option(Path("var/simulator"), help="where the truth log, grade.json and report.html go"),
    progress: bool = typer.Option(True, help="progress bar"),
) -> None:
    """Run the seeded city simulation against the running platform, then print the grade and write an HTML report."""
    import logging

    from simulator import grade
    from simulator.run import config_from_env, run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if transport not in ("mqtt", "ws"):
        raise typer.BadParameter("transport must be mqtt or ws")
    cfg = config_from_env(base_url=base_url or None, admin_email=admin_email or None, admin_password=admin_password or None,
                          admin_totp_secret=admin_totp_secret or None)
    cfg.city, cfg.drivers, cfg.orders_per_hour, cfg.speedup = city, drivers, orders_per_hour, speedup
    cfg.duration_s, cfg.seed, cfg.noise_m, cfg.transport = parse_duration(duration), seed, noise_m, transport
    cfg.tasks = tasks or ("mqtt" if transport == "mqtt" else "poll")
    cfg.commerce_share, cfg.watch_share, cfg.start_hour, cfg.drain_s = commerce_share, watch_share, start_hour, drain
    cfg.out_dir, cfg.progress, cfg.no_orders = out, progress, no_orders
    if smoke:
        apply_smoke(cfg)
    if not cfg.admin_password:
        typer.echo("error: admin password needed (--admin-password or SERENA_SIM_ADMIN_PASSWORD)", err=True)
        raise typer.Exit(2)
    result = run(cfg)
    g, report = grade.write_all(result)
    typer.echo(grade.terminal(g))
    typer.echo(f"report: {report}")
    if g["orders"]["lost"] or (g["orders"]["open"] and not no_orders):
        raise typer.Exit(1)


def apply_smoke(cfg) -> None:
    """The smoke preset (simulator.run.apply_smoke, next to the simulation it tunes)."""
    from simulator.run import apply_smoke as preset

    preset(cfg)


@app.command("load")
def load(
    profile: str = typer.Option("smoke", help="smoke | peak"),
    host: str = typer.Option("http://127.0.0.1:8000", help="the platform (loopback only)"),
    out: Path = typer.Option(Path("var/load"), help="Locust CSV output directory"),
    processes: int = typer.Option(1, min=1, max=16, help="Locust processes (--processes); 1 is enough below ~1,000 req/s"),
    duration: int = typer.Option(0, min=0, help="run time in seconds (default: the profile's)"),
) -> None:
    """Run the Locust load test headless with a bounded profile; print per-endpoint figures; exit 1 on a missed budget."""
    from load import runner

    if not re.match(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?/?$", host):
        typer.echo("error: load tests run against 127.0.0.1 only", err=True)
        raise typer.Exit(2)
    code = runner.run(profile=profile, host=host.rstrip("/"), out_dir=out, processes=processes, run_time_s=duration or None)
    sys.exit(code)
