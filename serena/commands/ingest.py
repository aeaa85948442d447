"""`serena ingest run`: the GPS ingestion process (MQTT shared subscription → tracking pipeline).

Run several with distinct `--replica` names to split the load: they share the MQTT group
`settings.tracking_share_group`. The replica name must be stable across restarts (the
supervisor restarts `ingest-0` as `ingest-0`): it names the broker sessions that hold the
messages this replica had received but not yet acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import typer

from core import logging as slog

app = typer.Typer(no_args_is_help=True, help="GPS ingestion (MQTT → validation → PostGIS + Redis).")


@app.command("run")
def run(replica: str = typer.Option(os.environ.get("SERENA_INGEST_REPLICA", "0"), help="stable name of this replica"),
        connections: int = typer.Option(0, min=0, max=32, help="MQTT connections (0 = settings)")) -> None:
    """Consume driver locations until SIGTERM / Ctrl-C."""
    from serena.commands.platform import settings_or_exit
    from tracking import ingest

    settings = settings_or_exit()
    if connections:
        settings = settings.model_copy(update={"tracking_mqtt_connections": connections})
    slog.configure(level=settings.log_level, as_json=settings.log_json)
    log = logging.getLogger("serena.ingest")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ingest.run_ingest(settings, replica=replica, stop=stop,
                                ready=lambda: log.info("ingest replica %s ready", replica))

    profile_to = os.environ.get("SERENA_INGEST_PROFILE")  # a file: cProfile stats of this run, for tuning
    profiler = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)
