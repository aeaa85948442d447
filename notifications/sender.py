"""Sending one notification, with a state machine that never sends a message twice.

    queued ──claim──► sending ──► sent
       ▲                 │  └───► failed   (refused, attempts used up, or outcome unknown)
       └── back-off ─────┘                  (a retry: the row is queued again with next_attempt_at)

The claim is one conditional UPDATE (`WHERE state = 'queued'`), committed **before** the
channel is called: a duplicate task (Celery redelivery, the recovery sweep re-enqueueing a
row whose task was only slow) finds the row no longer queued and does nothing. The outcome
is committed after the call. A worker that dies between the two leaves the row `sending`;
`recover` finds it after `notifications_stale_sending_s` and:

- webhooks: queues it again. The receiver may have processed the first POST, but every
  attempt carries the same `Idempotency-Key`, so a receiver following our docs drops it.
- e-mail and SMS: marks it failed ("outcome unknown"). SMTP and our SMS transport have no
  idempotency key on the receiving side, so a second send could reach the customer twice;
  support sees the reason in the notification list and can resend by hand.

This module talks to PostgreSQL with a plain asyncpg connection: it runs inside a Celery
task (`asyncio.run` per task), where an SQLAlchemy engine per task would be waste.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import asyncpg

from core.settings import Settings
from notifications import channels, preferences
from notifications.channels import Message, SendFailed
from notifications.models import Channel, State

log = logging.getLogger(__name__)

MAX_ATTEMPTS_OTHER = 5  # e-mail/SMS attempts when the server was unavailable (never after a hand-over)
REQUEUE_AFTER_S = 60  # a queued row due this long ago has lost its task (crash between commit and enqueue)

_CLAIM = """
UPDATE notifications SET state = 'sending', attempts = attempts + 1, sending_at = now(), updated_at = now()
 WHERE id = $1 AND state = 'queued'
RETURNING id, event_id, event_type, channel, category, recipient, subject, body_text, body_html, attempts, endpoint_id
"""


@dataclasses.dataclass(frozen=True)
class Outcome:
    state: str  # the row's state afterwards ("skipped" = not ours to send: already claimed or finished)
    retry_in_s: float | None = None  # set when the row is queued again: schedule the next attempt this far ahead
    detail: str = ""


def backoff_s(settings: Settings, attempt: int) -> float:
    """Delay before attempt `attempt + 1`: base, 2·base, 4·base, ... capped."""
    return min(settings.notifications_retry_backoff_s * 2 ** (attempt - 1), settings.notifications_retry_backoff_max_s)


def _sender_for(settings: Settings, channel: str) -> channels.Sender:
    if channel == Channel.EMAIL:
        return channels.email_sender(settings)
    if channel == Channel.SMS:
        return channels.sms_sender(settings)
    return channels.webhook_sender(settings)


async def deliver(conn: asyncpg.Connection, *, settings: Settings, notification_id: int,
                  sender: channels.Sender | None = None) -> Outcome:
    """Claim, send and record one notification (each step its own commit)."""
    row = await conn.fetchrow(_CLAIM, notification_id)
    if row is None:
        return Outcome("skipped")
    channel = row["channel"]
    message = Message(channel=channel, recipient=row["recipient"], subject=row["subject"], text=row["body_text"],
                      html=row["body_html"], idempotency_key=f"{row['event_id']}", event_type=row["event_type"])
    if channel == Channel.EMAIL:
        message = dataclasses.replace(message, unsubscribe_url=preferences.unsubscribe_url(
            settings, recipient=row["recipient"], channel=channel, category=row["category"]))
    if channel == Channel.WEBHOOK:
        ep = await conn.fetchrow("SELECT url, secret, active, deleted_at FROM webhook_endpoints WHERE id = $1", row["endpoint_id"])
        if ep is None or not ep["active"] or ep["deleted_at"] is not None:
            return await _finish(conn, row, State.FAILED, error="webhook endpoint disabled or deleted")
        message = dataclasses.replace(message, recipient=ep["url"], secret=ep["secret"])
    max_attempts = settings.notifications_webhook_max_attempts if channel == Channel.WEBHOOK else MAX_ATTEMPTS_OTHER
    started = time.perf_counter()
    try:
        receipt = (sender or _sender_for(settings, channel)).send(message)
    except SendFailed as exc:
        failure: SendFailed | None = exc
    except Exception as exc:  # noqa: BLE001 - a bug or a full disk: recorded on the row, never lost in a log
        # Safe to retry only where the receiver de-duplicates (webhooks).
        failure = SendFailed(f"unexpected error: {exc!r}", retry=channel == Channel.WEBHOOK)
    else:
        failure = None
    duration_ms = (time.perf_counter() - started) * 1000
    if failure is None:
        return await _finish(conn, row, State.SENT, status_code=receipt.status_code, duration_ms=duration_ms,
                             detail=receipt.detail)
    if failure.retry and row["attempts"] < max_attempts:
        delay = backoff_s(settings, row["attempts"])
        return await _finish(conn, row, State.QUEUED, error=failure.reason, status_code=failure.status_code,
                             duration_ms=duration_ms, retry_in_s=delay)
    reason = failure.reason if not failure.retry else f"{failure.reason} (gave up after {row['attempts']} attempts)"
    return await _finish(conn, row, State.FAILED, error=reason, status_code=failure.status_code, duration_ms=duration_ms)


async def _finish(conn: asyncpg.Connection, row: Any, state: State, *, error: str | None = None,
                  status_code: int | None = None, duration_ms: float = 0.0, retry_in_s: float | None = None,
                  detail: str = "") -> Outcome:
    """Record the outcome (and the webhook log entry) in one transaction; only a `sending` row is moved."""
    async with conn.transaction():
        await conn.execute(
            """UPDATE notifications SET state = $2::varchar, last_error = $3, updated_at = now(),
                      sent_at = CASE WHEN $2::varchar = 'sent' THEN now() ELSE sent_at END,
                      next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at
                                             ELSE now() + make_interval(secs => $4::float8) END
                WHERE id = $1 AND state = 'sending'""",
            row["id"], state.value, error, retry_in_s)
        if row["channel"] == Channel.WEBHOOK:
            await conn.execute(
                "INSERT INTO webhook_deliveries (notification_id, attempt, status_code, error, duration_ms, retry_in_s) "
                "VALUES ($1, $2, $3, $4, $5, $6)", row["id"], row["attempts"], status_code, error, duration_ms, retry_in_s)
    if state is State.FAILED:
        log.warning("notification %s (%s to %s) failed: %s", row["id"], row["channel"], row["recipient"], error)
    return Outcome(state.value, retry_in_s, error or detail)


async def recover(conn: asyncpg.Connection, *, settings: Settings, requeue_after_s: float = REQUEUE_AFTER_S) -> list[int]:
    """Sweep: settle rows left `sending` by a dead worker; return the ids of queued rows that need a task."""
    async with conn.transaction():
        stale = await conn.fetch(
            """UPDATE notifications SET updated_at = now(), next_attempt_at = now(),
                      state = CASE WHEN channel = 'webhook' AND attempts < $2 THEN 'queued' ELSE 'failed' END,
                      last_error = CASE WHEN channel = 'webhook' AND attempts < $2
                          THEN 'worker stopped while sending; sent again with the same Idempotency-Key'
                          WHEN channel = 'webhook' THEN 'worker stopped while sending; attempts used up'
                          ELSE 'worker stopped while sending: outcome unknown, not sent again (no idempotency key on this channel)' END
                WHERE state = 'sending' AND sending_at < now() - make_interval(secs => $1::float8)
            RETURNING id, channel, state""",
            float(settings.notifications_stale_sending_s), settings.notifications_webhook_max_attempts)
    for r in stale:
        log.warning("notification %s (%s) was left sending by a dead worker: now %s", r["id"], r["channel"], r["state"])
    rows = await conn.fetch(
        "SELECT id FROM notifications WHERE state = 'queued' AND next_attempt_at < now() - make_interval(secs => $1::float8) "
        "ORDER BY id LIMIT 1000", float(requeue_after_s))
    requeued = [r["id"] for r in stale if r["state"] == State.QUEUED]
    return sorted(set(requeued) | {r["id"] for r in rows})
