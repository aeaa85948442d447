"""What dispatch consumes from the event bus, and what it publishes.

Consumes:
- `order.paid` (commerce) → a delivery job, idempotent on the order id (consumer group `dispatch-jobs`).
- `delivery.*`, `driver.*` (its own) → the planner marks the region dirty (group `dispatch-planner`).
- `stop.arriving` (tracking) → the job is `arriving` (group `dispatch-stops`); a late or repeated
  detection changes nothing (the state machine only moves forward from picked_up/out_for_delivery).

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
STOPS_GROUP = "dispatch-stops"
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


async def on_stop_event(db: AsyncSession, event: Event) -> None:
    """Tracking saw the driver approach a stop: the customer's delivery is `arriving`."""
    import uuid

    from dispatch import lifecycle
    from dispatch.models import DeliveryJob, JobState

    try:
        job_id = uuid.UUID(str(event.payload.get("stop_id")))
    except ValueError:
        return  # not one of our jobs (a depot stop, another system's stop id)
    job = await db.get(DeliveryJob, job_id, with_for_update=True)
    if job is None or job.driver_id != event.payload.get("driver_id"):
        return  # reassigned since: the old driver's approach means nothing for this job
    if job.state in (JobState.PICKED_UP.value, JobState.OUT_FOR_DELIVERY.value):
        await lifecycle.transition(db, job=job, to=JobState.ARRIVING, actor=f"tracking:{event.event_id}",
                                   reason="driver approaching the stop")
