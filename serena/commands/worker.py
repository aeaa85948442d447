"""`serena worker`: the Celery worker (notifications, webhooks, periodic jobs) and the notifications event consumer.

One command, two OS processes: this one runs the event consumer (asyncio) and a recovery
sweep; a child runs `celery worker` (prefork). If either side dies the command exits
non-zero and the supervisor restarts both, so a half-running worker never lingers.
Celery uses the platform's Redis (`SERENA_REDIS_URL`) with every key under
`<SERENA_REDIS_PREFIX>celery:` (kombu's `global_keyprefix`), so it shares nothing with the
event stream and parallel test runs do not see each other's queues.

The Celery child also runs an embedded beat (`-B`) that sends the periodic jobs of
`serena.periodic` (unpaid-order expiry, processed_events pruning) to the `periodic` queue;
that module explains why N workers' beats still make one run per interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys

import typer

app = typer.Typer()

RECOVER_INTERVAL_S = 30.0  # how often the sweep settles stale `sending` rows and re-enqueues lost tasks
_celery_app = None


def make_celery(settings):
    """The platform's Celery app for `settings` (broker only: task results live in our own tables)."""
    from celery import Celery

    from serena import periodic

    celery = Celery("serena", broker=settings.redis_url, include=["notifications.tasks", "serena.periodic"])
    celery.conf.update(
        broker_transport_options={"global_keyprefix": f"{settings.redis_prefix}celery:",
                                  # a task not acked within this long is handed to another worker;
                                  # must exceed the longest countdown a retry schedules
                                  "visibility_timeout": max(3600, int(settings.notifications_retry_backoff_max_s) * 2)},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_acks_late=True,  # a worker killed mid-task: the task runs again (the row's state machine makes that safe)
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="notifications",
        worker_hijack_root_logger=False,
        # Periodic jobs (serena.periodic): every worker embeds a beat (`-B`); a Redis mark per
        # job and interval makes N beats one run. In-memory schedule: no file to share or lock.
        beat_schedule=periodic.beat_schedule(settings),
        beat_scheduler="celery.beat:Scheduler",
        result_expires=None,  # no result backend: no daily backend_cleanup task either
    )
    return celery


def __getattr__(name: str):
    # `celery -A serena.commands.worker:celery_app` — built on first use, so importing this
    # module (every `serena` command does) neither reads settings nor touches Redis.
    global _celery_app
    if name == "celery_app":
        if _celery_app is None:
            from core.settings import get_settings

            _celery_app = make_celery(get_settings())
        return _celery_app
    raise AttributeError(name)


def celery_command(settings, *, concurrency: int) -> list[str]:
    from serena import periodic

    return [sys.executable, "-m", "celery", "-A", "serena.commands.worker:celery_app", "worker", "-B",
            "-Q", f"notifications,{periodic.QUEUE}", "-c", str(concurrency), "-n", f"worker-{os.getpid()}@{socket.gethostname()}",
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle", "--without-heartbeat"]


async def run_consumer(settings, *, stop: asyncio.Event, enqueue) -> None:
    """The notifications consumer and the recovery sweep, until `stop` is set."""
    import asyncpg
    import redis.asyncio as aioredis

    from core import db as dbmod
    from core.consumer import run_consumers
    from notifications import events as nevents
    from notifications import sender

    log = logging.getLogger("serena.worker")
    engine = dbmod.make_engine(settings.database_url)
    sessions = dbmod.make_sessionmaker(engine)
    redis = aioredis.from_url(settings.redis_url)
    consumer = nevents.make_consumer(settings=settings, sessions=sessions, redis=redis, enqueue=enqueue)

    async def sweep() -> None:
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(settings.asyncpg_dsn)
                try:
                    ids = await sender.recover(conn, settings=settings)
                finally:
                    await conn.close()
                if ids:
                    log.warning("re-enqueueing %d notifications whose task was lost", len(ids))
                    enqueue(ids)
            except Exception:  # noqa: BLE001 - an outage: try again next round
                log.exception("notification recovery sweep failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=RECOVER_INTERVAL_S)
            except TimeoutError:
                pass

    sweeper = asyncio.create_task(sweep())
    try:
        await run_consumers([consumer], stop)
    finally:
        stop.set()
        await sweeper
        await redis.aclose()
        await engine.dispose()


@app.command()
def worker(concurrency: int = typer.Option(0, help="Celery worker processes (0 = SERENA_WORKER_CONCURRENCY)"),
           consumer: bool = typer.Option(True, help="also run the notifications event consumer")) -> None:
    """Run the Celery worker and the notifications event consumer until SIGTERM / Ctrl-C."""
    from core import logging as slog
    from notifications import tasks
    from serena.commands.platform import settings_or_exit

    settings = settings_or_exit()
    slog.configure(level=settings.log_level, as_json=settings.log_json)
    log = logging.getLogger("serena.worker")
    child = subprocess.Popen(celery_command(settings, concurrency=concurrency or settings.worker_concurrency))
    log.info("celery worker started (pid %d)%s", child.pid, "; notifications consumer running" if consumer else "")

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def watch_child() -> None:
            while child.poll() is None and not stop.is_set():
                await asyncio.sleep(0.5)
            if child.poll() is not None:
                log.error("celery worker exited with %s; stopping", child.returncode)
            stop.set()

        watcher = asyncio.create_task(watch_child())
        try:
            if consumer:
                await run_consumer(settings, stop=stop, enqueue=tasks.enqueuer(make_celery(settings)))
            else:
                await stop.wait()
        finally:
            stop.set()
            await watcher
        return 0 if child.poll() is None else 1

    code = 1
    try:
        code = asyncio.run(main())
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # Celery's warm shutdown: running tasks finish
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    raise typer.Exit(code)
