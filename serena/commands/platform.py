"""Top-level commands: `serena up` (migrate, then run the platform's processes), `serena migrate`, `serena check`."""

from __future__ import annotations

import asyncio
import logging

import typer

from core import logging as slog
from core import migrate as migrations
from core.settings import Settings, SettingsError, load_settings
from serena import preflight
from serena.supervisor import Spec, Supervisor, python_module

app = typer.Typer()


def settings_or_exit() -> Settings:
    """Settings, or one line naming the bad variable and exit code 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _preflight(settings: Settings, *, mqtt: bool = True) -> dict[str, str]:
    try:
        return asyncio.run(preflight.run_all(settings, mqtt=mqtt))
    except preflight.PreflightError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _module_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def api_workers(settings: Settings, workers: int | None = None) -> int:
    """API processes to run: the option, else SERENA_API_WORKERS, else one per CPU core."""
    import os

    return workers or settings.api_workers or os.cpu_count() or 1


def _metrics_dir(settings: Settings) -> str:
    """A fresh directory where the API processes keep their Prometheus values (multiprocess mode)."""
    import shutil
    from pathlib import Path

    d = Path(settings.data_dir).absolute() / "run" / f"prometheus-api-{settings.api_port}"
    shutil.rmtree(d, ignore_errors=True)  # values of a previous run's (dead) processes must not be summed in
    d.mkdir(parents=True)
    return str(d)


def process_specs(settings: Settings, *, workers: int | None = None) -> list[Spec]:
    """The processes of ARCHITECTURE.md that exist so far.

    The API runs as `workers` uvicorn worker processes on one listening socket (the kernel
    hands each connection to one of them): per-process state is only caches and the fleet
    feed loop (dispatch.feed, one per process, reading Redis); WebSocket fan-out goes through
    Redis pub/sub; migrations run once, in `up`, before any process starts; /metrics sums all
    workers (prometheus_client multiprocess mode, one value file per process in a directory
    emptied at start).
    """
    n = api_workers(settings, workers)
    env = {"PROMETHEUS_MULTIPROC_DIR": _metrics_dir(settings)} if n > 1 else {}
    specs = [Spec("api", python_module("uvicorn", "serena.asgi:app", "--host", settings.api_host,
                                       "--port", str(settings.api_port), "--workers", str(n),
                                       "--no-access-log", "--log-level", settings.log_level.lower()), env=env)]
    if _module_exists("core.relay"):
        specs.append(Spec("relay", python_module("serena.cli", "events", "relay")))
    if _module_exists("tracking.ingest"):
        specs.append(Spec("ingest", python_module("serena.cli", "ingest", "run", "--replica", "0")))
    specs.append(Spec("planner", python_module("serena.cli", "planner")))
    specs.append(Spec("worker", python_module("serena.cli", "worker")))  # Celery + the notifications consumer
    # Commerce's consumer of delivery.* (loyalty credit, cash settlement, refunds on returns).
    specs.append(Spec("commerce", python_module("serena.cli", "commerce", "consume")))
    return specs


@app.command()
def check() -> None:
    """Validate settings and reach every service; print what was found."""
    settings = settings_or_exit()
    for name, version in _preflight(settings).items():
        typer.echo(f"{name:<9} ok  {version}")


@app.command()
def migrate() -> None:
    """Apply database migrations (idempotent)."""
    settings = settings_or_exit()
    _preflight(settings, mqtt=False)
    migrations.upgrade(settings.database_url)
    typer.echo("database schema is up to date")


@app.command()
def up(workers: int = typer.Option(0, min=0, max=64, help="API worker processes (default SERENA_API_WORKERS, else one per core)"),
       simulate: bool = typer.Option(False, "--simulate", help="also run `serena simulate $SERENA_SIM_ARGS` once (make demo)")) -> None:
    """Migrate the database, then run the platform's processes until Ctrl-C."""
    settings = settings_or_exit()
    slog.configure(level=settings.log_level, as_json=settings.log_json)
    log = logging.getLogger("serena.up")
    found = _preflight(settings)
    log.info("services reachable: %s", ", ".join(f"{k} {v}" for k, v in found.items()))
    migrations.upgrade(settings.database_url)
    log.info("database schema is up to date")
    specs = process_specs(settings, workers=workers or None)
    if simulate:  # one-shot: when the simulation ends, the platform keeps running for people to look at
        import os
        import shlex

        specs.append(Spec("simulator", python_module("serena.cli", "simulate", *shlex.split(os.environ.get("SERENA_SIM_ARGS", ""))),
                          restart=False))
    log.info("starting %s; API on http://%s:%d (Ctrl-C stops everything)", ", ".join(s.name for s in specs),
             settings.api_host, settings.api_port)
    raise typer.Exit(Supervisor(specs).run())
