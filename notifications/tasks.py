"""Celery tasks of notifications: send one message (`notifications.send`), with back-off retries.

Tasks are `shared_task`s, bound to whichever Celery app the process builds (the composition
root's, `serena.commands.worker`); they read settings from the environment like every
process. Each task runs its async body with `asyncio.run` and one short-lived database
connection: a send is I/O-bound and rare next to the cost of a connection.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from celery import shared_task

from core.settings import get_settings
from notifications import sender

log = logging.getLogger(__name__)

QUEUE = "notifications"
SEND = "notifications.send"


async def _deliver(notification_id: int) -> sender.Outcome:
    settings = get_settings()
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        return await sender.deliver(conn, settings=settings, notification_id=notification_id)
    finally:
        await conn.close()


@shared_task(bind=True, name=SEND, ignore_result=True, acks_late=True, max_retries=None)
def send(self, notification_id: int) -> str:
    """Send one notification; a retryable failure schedules the next attempt after the row's back-off."""
    outcome = asyncio.run(_deliver(notification_id))
    if outcome.retry_in_s is not None:
        log.info("notification %s: %s; next attempt in %.1f s", notification_id, outcome.detail, outcome.retry_in_s)
        # The row is already queued again (committed): if this retry message is lost, the
        # recovery sweep re-enqueues the row; if both arrive, the second claim finds nothing.
        raise self.retry(countdown=outcome.retry_in_s, max_retries=None)
    return outcome.state


def enqueuer(app):
    """`enqueue(ids)` publishing one send task per notification id through `app` (a Celery app)."""

    def enqueue(ids: list[int]) -> None:
        for notification_id in ids:
            app.send_task(SEND, args=[notification_id], queue=QUEUE)

    return enqueue
