"""The delivery job's state machine: which transitions are legal, and the event each one publishes.

Every transition writes the new state, a history row and a `delivery.<state>` outbox event
in the caller's transaction, so the state change and the news of it cannot disagree. An
illegal transition is refused with the allowed ones named, never applied "to be safe".
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from core import events
from core.errors import Conflict
from dispatch.models import DeliveryJob, JobState, JobTransition

S = JobState
ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.CREATED: frozenset({S.PLANNED, S.CANCELLED}),
    S.PLANNED: frozenset({S.ASSIGNED, S.CREATED, S.CANCELLED}),  # back to created: dropped from the plan
    S.ASSIGNED: frozenset({S.PICKED_UP, S.PLANNED, S.CREATED, S.CANCELLED}),  # re-planned or reassigned before pickup
    S.PICKED_UP: frozenset({S.OUT_FOR_DELIVERY, S.ARRIVING, S.DELIVERED, S.FAILED}),
    S.OUT_FOR_DELIVERY: frozenset({S.ARRIVING, S.DELIVERED, S.FAILED}),
    S.ARRIVING: frozenset({S.DELIVERED, S.FAILED, S.OUT_FOR_DELIVERY}),  # out again: left the area without delivering
    S.FAILED: frozenset({S.OUT_FOR_DELIVERY, S.ARRIVING, S.RETURNED, S.DELIVERED}),  # re-attempt or return to depot
    S.DELIVERED: frozenset(),
    S.RETURNED: frozenset(),
    S.CANCELLED: frozenset(),
}

# The event name published for each state. `delivery.completed` is the name commerce
# listens to for a successful delivery (loyalty credit, COD settlement).
EVENT_FOR: dict[JobState, str] = {
    S.CREATED: "delivery.created",
    S.PLANNED: "delivery.planned",
    S.ASSIGNED: "delivery.assigned",
    S.PICKED_UP: "delivery.picked_up",
    S.OUT_FOR_DELIVERY: "delivery.out_for_delivery",
    S.ARRIVING: "delivery.arriving",
    S.DELIVERED: "delivery.completed",
    S.FAILED: "delivery.failed",
    S.RETURNED: "delivery.returned",
    S.CANCELLED: "delivery.cancelled",
}


class IllegalTransition(Conflict):
    """The job is not in a state from which the requested one can be reached."""


def check(current: JobState, target: JobState) -> None:
    """Raise IllegalTransition unless current → target is allowed."""
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED[current])) or "none (terminal state)"
        raise IllegalTransition(f"delivery cannot go from {current.value} to {target.value}; allowed from {current.value}: {allowed}")


def payload(job: DeliveryJob, **extra) -> dict:
    """What every delivery event carries, so consumers need no lookup."""
    order_id = job.idempotency_key.split(":", 1)[1] if job.idempotency_key.startswith("order:") else None
    return {
        "job_id": str(job.id),
        "order_id": order_id,  # the commerce order behind it (tracking links, notifications, loyalty key on it)
        "reference": job.reference,
        "source": job.source,
        "idempotency_key": job.idempotency_key,
        "state": job.state,
        "driver_id": job.driver_id,
        "attempts": job.attempts,
        "reason": job.state_reason,
        **extra,
    }


async def record_created(db: AsyncSession, *, job: DeliveryJob, actor: str) -> None:
    """History row and `delivery.created` for a new job (already added to the session)."""
    db.add(JobTransition(job_id=job.id, from_state=None, to_state=S.CREATED.value, actor=actor))
    await events.emit(db, type=EVENT_FOR[S.CREATED], payload=payload(job), aggregate="delivery", aggregate_id=job.id)


async def transition(db: AsyncSession, *, job: DeliveryJob, to: JobState, actor: str, reason: str = "", **extra) -> None:
    """Move `job` to `to` (checked), with a history row and its event, in the caller's transaction."""
    current = JobState(job.state)
    check(current, to)
    job.state = to.value
    job.state_reason = reason
    job.updated_at = datetime.now(UTC)
    if to is S.FAILED:
        job.attempts += 1
    db.add(JobTransition(job_id=job.id, from_state=current.value, to_state=to.value, reason=reason, actor=actor))
    await events.emit(db, type=EVENT_FOR[to], payload=payload(job, previous_state=current.value, **extra),
                      aggregate="delivery", aggregate_id=job.id)
