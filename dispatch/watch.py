"""Watching the fleet: silent drivers (on duty, no fix) and late-risk jobs become ranked exceptions.

A driver silent for `dispatch_silent_after_s` raises a `silent_driver` exception; after
`dispatch_reassign_after_s` their jobs not yet picked up go back to the planner. A job whose
ETA is past its promised window raises `late_risk`, its risk growing with the minutes late.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import events
from core.settings import Settings
from dispatch import planner, service
from dispatch.models import DeliveryJob, JobState, Shift

log = logging.getLogger(__name__)


async def silent_drivers(*, sessions: async_sessionmaker[AsyncSession], redis: aioredis.Redis, settings: Settings,
                         on_release: Callable[[], None], now: datetime | None = None) -> list[int]:
    """Raise exceptions for silent drivers and release the jobs of long-silent ones; returns released driver ids."""
    now = now or datetime.now(UTC)
    released: list[int] = []
    async with sessions() as db, db.begin():
        shifts = list((await db.execute(select(Shift).where(Shift.ended_at.is_(None)))).scalars())
        if not shifts:
            return released
        live = await planner.live_positions(redis, settings, [s.driver_id for s in shifts])
        for shift in shifts:
            last_ts = live[shift.driver_id][2] if shift.driver_id in live else shift.started_at.timestamp()
            silent_s = now.timestamp() - last_ts
            subject = str(shift.driver_id)
            if silent_s < settings.dispatch_silent_after_s:
                await service.resolve_exceptions(db, kind="silent_driver", subject=subject)
                continue
            risk = min(1.0, 0.5 + silent_s / (4 * settings.dispatch_reassign_after_s))
            await service.raise_exception(db, kind="silent_driver", subject=subject, driver_id=shift.driver_id, risk=risk,
                                          detail=f"no position for {silent_s / 60:.0f} min while on duty",
                                          action="call the driver" if silent_s < settings.dispatch_reassign_after_s
                                          else "jobs not yet picked up were reassigned; call the driver")
            if silent_s >= settings.dispatch_reassign_after_s:
                jobs = await service.release_unstarted(db=db, driver_id=shift.driver_id, actor="watch",
                                                       reason=f"driver silent for {silent_s / 60:.0f} min")
                if jobs:
                    await events.emit(db, type="driver.silent", payload={"driver_id": shift.driver_id, "silent_s": silent_s,
                                                                         "released_jobs": [str(j.id) for j in jobs]},
                                      aggregate="driver", aggregate_id=shift.driver_id)
                    released.append(shift.driver_id)
        # Late risk: the planned ETA is past the promised window.
        late = (await db.execute(select(DeliveryJob).where(DeliveryJob.eta.is_not(None),
                                                           DeliveryJob.eta > DeliveryJob.window_end,
                                                           DeliveryJob.state.in_(planner.OPEN_STATES)))).scalars()
        for job in late:
            minutes = (job.eta - job.window_end).total_seconds() / 60
            await service.raise_exception(db, kind="late_risk", subject=str(job.id), job_id=job.id, driver_id=job.driver_id,
                                          risk=min(1.0, 0.3 + minutes / 60),
                                          detail=f"ETA {minutes:.0f} min after the promised window",
                                          action="tell the customer, or reassign to a closer van")
    if released:
        on_release()
    return released
