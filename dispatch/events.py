"""What dispatch consumes from the event bus, and what it publishes.

Consumes:
- `order.paid` (commerce) → a delivery job, idempotent on the order id (consumer group `dispatch-jobs`).
- `delivery.*`, `driver.*` (its own) → the planner marks the region dirty (group `dispatch-planner`).

Publishes (through the outbox, see `dispatch.lifecycle.EVENT_FOR`): `delivery.created`,
`delivery.planned`, `delivery.assigned`, `delivery.picked_up`, `delivery.out_for_delivery`,
`delivery.arriving`, `delivery.completed`, `delivery.failed`, `delivery.returned`,
`delivery.cancelled`, `delivery.reassigned`; and `driver.on_duty`, `driver.off_duty`, `driver.silent`.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import ValidationFailed
from core.events import Event
from dispatch import service

log = logging.getLogger(__name__)

JOBS_GROUP = "dispatch-jobs"
PLANNER_GROUP = "dispatch-planner"
PLANNER_TRIGGERS = ("delivery.created", "delivery.cancelled", "delivery.failed", "delivery.reassigned",
                    "driver.on_duty", "driver.off_duty", "driver.silent")


async def on_order_paid(db: AsyncSession, event: Event) -> None:
    """A paid order becomes a delivery job (the same order twice gives the same job)."""
    try:
        key, request = service.request_from_order_paid(event.payload)
    except ValidationFailed:
        raise  # malformed: the consumer retries, then dead-letters it with this reason, never drops it
    job, created = await service.create_job(db=db, request=request, idempotency_key=key, source="order",
                                            actor=f"event:{event.event_id}")
    log.info("order %s → delivery %s (%s)", event.payload.get("order_id"), job.id, "created" if created else "existing")
