"""Periodic platform jobs, run without a person by Celery beat inside `serena worker`.

Jobs: expiring unpaid orders (commerce; stock goes back) every `commerce_expire_interval_s`,
and pruning the event bus' idempotency records (`core.consumer.prune_processed`) every
`events_prune_interval_s`.

Every `serena worker` embeds a beat (`celery worker -B`, see `serena.commands.worker`), so
with N workers each job is *sent* N times per interval. Each run first takes a Redis key
`<prefix>periodic:<job>` with SET NX and a time-to-live of 90 % of the interval, and does
not delete it afterwards: the first run of an interval does the work, the others find the
key and return. The key is a "done recently" mark rather than a mutex held for the run, so a
worker that dies mid-run blocks the job for at most one interval, never longer; and a run
longer than the interval could overlap the next one. Both jobs are safe even then — orders
and processed_events rows are taken with SKIP LOCKED — so the key saves work, it does not
carry correctness. A single beat with a leader lease was the alternative; it adds a
process (or a lease renewal inside beat) to the deployment for no gain over this.

Beat keeps its schedule in memory (`celery.beat:Scheduler`, no schedule file), so a
restarted worker waits one interval before its first send; the key keeps that harmless.
Messages carry `expires` = the interval (at least a minute), so a worker that was down does
not run a pile of stale sends when it comes back.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis
from celery import shared_task

from core.settings import get_settings

log = logging.getLogger(__name__)

QUEUE = "periodic"
EXPIRE_UNPAID = "serena.periodic.expire_unpaid_orders"
PRUNE_PROCESSED = "serena.periodic.prune_processed_events"
RUN_MARK_SHARE = 0.9  # the "done" key lives this share of the interval
EXPIRE_BATCH = 200  # orders cancelled per transaction


def beat_schedule(settings) -> dict:
    """The Celery `beat_schedule` for `settings`."""
    def entry(task: str, every_s: int) -> dict:
        # A send not started within its interval (a minute at least, so a busy worker under a
        # short test interval still gets one) is dropped: the next send does the same work.
        return {"task": task, "schedule": float(every_s), "options": {"queue": QUEUE, "expires": max(float(every_s), 60.0)}}

    return {
        "expire-unpaid-orders": entry(EXPIRE_UNPAID, settings.commerce_expire_interval_s),
        "prune-processed-events": entry(PRUNE_PROCESSED, settings.events_prune_interval_s),
    }


def run_key(prefix: str, job: str) -> str:
    return f"{prefix}periodic:{job}"


async def claim_run(redis: aioredis.Redis, prefix: str, job: str, *, interval_s: float) -> bool:
    """True if no worker ran `job` within the last 90 % of its interval (and marks this run)."""
    ttl_ms = max(1, int(interval_s * RUN_MARK_SHARE * 1000))
    return bool(await redis.set(run_key(prefix, job), datetime.now(UTC).isoformat(), nx=True, px=ttl_ms))


def _load_commerce_models() -> None:
    """Import every `commerce.*.models`: an order's relationships reach tables of other sub-packages
    (stock reservations → product variants), which SQLAlchemy must know before the first query.
    The API process imports them all through its routers; a worker or the CLI does not."""
    import importlib
    import pkgutil

    import commerce

    for mod in pkgutil.walk_packages(commerce.__path__, "commerce."):
        if mod.name.endswith(".models"):
            importlib.import_module(mod.name)


async def expire_all(settings, *, card_after_s: int, bank_transfer_after_s: int) -> int:
    """Cancel every order unpaid past its limit, `EXPIRE_BATCH` per transaction; how many were cancelled."""
    _load_commerce_models()
    from commerce.orders import service as orders
    from commerce.payments.provider import StripeProvider
    from core import db as dbmod

    engine = dbmod.make_engine(settings.database_url, pool_size=1)
    total = 0
    try:
        sessions = dbmod.make_sessionmaker(engine)
        provider = StripeProvider(settings)
        while True:
            async with sessions() as db, db.begin():
                n = await orders.expire_unpaid(db=db, provider=provider, now=datetime.now(UTC), card_after_s=card_after_s,
                                               bank_transfer_after_s=bank_transfer_after_s, limit=EXPIRE_BATCH)
            total += n
            if n < EXPIRE_BATCH:
                return total
    finally:
        await engine.dispose()


async def expire_unpaid_orders(settings) -> int | None:
    """The periodic expiry with the settings' limits; None if another worker ran it this interval."""
    redis = aioredis.from_url(settings.redis_url)
    try:
        if not await claim_run(redis, settings.redis_prefix, "expire-unpaid-orders", interval_s=settings.commerce_expire_interval_s):
            return None
    finally:
        await redis.aclose()
    total = await expire_all(settings, card_after_s=settings.commerce_unpaid_card_s,
                             bank_transfer_after_s=settings.commerce_unpaid_bank_transfer_s)
    if total:
        log.info("expired %d unpaid orders", total)
    return total


async def prune_processed_events(settings) -> dict[str, int] | None:
    """core.consumer.prune_processed with the settings' retention; None if another worker ran it this interval."""
    from core.consumer import prune_processed

    redis = aioredis.from_url(settings.redis_url)
    try:
        if not await claim_run(redis, settings.redis_prefix, "prune-processed-events", interval_s=settings.events_prune_interval_s):
            return None
        conn = await asyncpg.connect(settings.asyncpg_dsn)
        try:
            return await prune_processed(conn, redis, settings.redis_prefix, retention_s=settings.events_processed_retention_s)
        finally:
            await conn.close()
    finally:
        await redis.aclose()


@shared_task(name=EXPIRE_UNPAID, ignore_result=True)
def expire_unpaid_orders_task() -> int | None:
    """Celery entry point of `expire_unpaid_orders` (settings from the environment)."""
    return asyncio.run(expire_unpaid_orders(get_settings()))


@shared_task(name=PRUNE_PROCESSED, ignore_result=True)
def prune_processed_events_task() -> dict[str, int] | None:
    """Celery entry point of `prune_processed_events`."""
    return asyncio.run(prune_processed_events(get_settings()))
