"""`serena events ...`: run the outbox relay, look at the bus, handle dead letters.

`serena events relay` is the relay process of ARCHITECTURE.md: run one per machine or
more; one leads (a lease in Redis), the others stand by. SIGTERM or Ctrl-C stops it after
the current batch and hands the lease over at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import typer

from core import logging as slog
from core import relay as relay_mod
from core.settings import Settings, SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, help="Event bus: outbox relay, stats, dead letters.")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _with_bus(settings: Settings, fn: Callable[[asyncpg.Pool, aioredis.Redis], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=2, timeout=5)
        redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        try:
            return await fn(pool, redis)
        finally:
            await redis.aclose()
            await pool.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"error: cannot reach the database or Redis: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def relay(
    batch_size: int = typer.Option(500, min=1, max=5_000, help="outbox rows per XADD script call and commit"),
    poll_interval_s: float = typer.Option(1.0, min=0.01, help="polling fallback when no NOTIFY arrives"),
    lease_ttl_s: float = typer.Option(10.0, min=0.5, help="leader lease; a standby takes over within this after a crash"),
    retention_s: float = typer.Option(24 * 3600.0, min=0, help="keep acknowledged stream entries this long"),
    outbox_retention_s: float = typer.Option(7 * 24 * 3600.0, min=0, help="delete relayed outbox rows older than this"),
    metrics_port: int = typer.Option(0, min=0, max=65535, help="serve Prometheus metrics on this port (0: off)"),
) -> None:
    """Run the outbox relay until SIGTERM / Ctrl-C."""
    settings = _settings()
    slog.configure(level=settings.log_level, as_json=settings.log_json)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await relay_mod.run_relay(
            settings, stop=stop, batch_size=batch_size, poll_interval_s=poll_interval_s, lease_ttl_s=lease_ttl_s,
            retention_s=retention_s, outbox_retention_s=outbox_retention_s,
        )

    asyncio.run(run())


@app.command()
def stats(as_json: bool = typer.Option(False, "--json", help="one JSON object")) -> None:
    """Outbox backlog, stream length, each group's pending and lag, dead letters, the leader."""
    settings = _settings()
    s = _with_bus(settings, lambda pool, redis: relay_mod.bus_stats(pool=pool, redis=redis, prefix=settings.redis_prefix))
    if as_json:
        typer.echo(json.dumps(s))
        return
    age = s["outbox_oldest_unrelayed_s"]
    typer.echo(f"outbox      {s['outbox_unrelayed']} unrelayed" + (f" (oldest {age:.1f} s)" if age is not None else "")
               + f", ~{s['outbox_rows_estimate']} rows kept")
    typer.echo(f"stream      {s['stream']}: {s['stream_length']} entries ({s['stream_first_id']} .. {s['stream_last_id']})")
    typer.echo(f"leader      {s['leader'] or '-'}")
    typer.echo(f"dead        {s['dead_letters']} dead letters")
    for g in s["groups"]:
        typer.echo(f"group       {g['name']}: {g['consumers']} consumers, {g['pending']} pending, lag {g['lag']}, "
                   f"last delivered {g['last_delivered_id']}")


@app.command("dead-letters")
def dead_letters(count: int = typer.Option(20, min=1, help="how many, newest first")) -> None:
    """List the newest dead letters with their error."""
    settings = _settings()
    rows = _with_bus(settings, lambda pool, redis: relay_mod.dead_letters(redis, settings.redis_prefix, count=count))
    for r in rows:
        typer.echo(f"{r['dead_id']}  {r.get('dead_group', '?')}  {r.get('type', '?')}  {r.get('event_id', '?')}  "
                   f"attempts={r.get('dead_attempts', '?')}  {r.get('dead_error', '').splitlines()[-1:] or ''}")
    if not rows:
        typer.echo("no dead letters")


@app.command()
def requeue(
    dead_ids: list[str] = typer.Argument(None, help="dead-letter ids to requeue (from `dead-letters`)"),
    all_: bool = typer.Option(False, "--all", help="requeue every dead letter"),
) -> None:
    """Put dead letters back on the stream once the handler is fixed (groups that applied them skip them)."""
    if not dead_ids and not all_:
        typer.echo("error: name dead-letter ids or pass --all", err=True)
        raise typer.Exit(2)
    settings = _settings()
    n = _with_bus(settings, lambda pool, redis: relay_mod.requeue_dead_letters(redis, settings.redis_prefix, None if all_ else dead_ids))
    typer.echo(f"requeued {n} dead letters")


@app.command()
def replay(
    since: datetime = typer.Option(..., help="re-send outbox rows relayed at or after this time (ISO 8601, UTC if no zone)"),
) -> None:
    """Re-send relayed events from the outbox (after Redis lost data, or to feed a new group older history)."""
    settings = _settings()
    when = since if since.tzinfo else since.replace(tzinfo=UTC)

    async def run(pool: asyncpg.Pool, redis: aioredis.Redis) -> int:
        return await relay_mod.Relay(pool=pool, redis=redis, prefix=settings.redis_prefix).replay(since=when)

    n = _with_bus(settings, run)
    typer.echo(f"re-sent {n} events; consumers skip those they had applied")
