"""HTTP routes of dispatch: the public delivery API, the driver's endpoints, the dispatcher's fleet endpoints."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Request, Response, UploadFile
from sqlalchemy import func, select

from core import storage
from core.errors import Forbidden, ValidationFailed
from core.rbac import Permission
from dispatch import labels, planner, service
from dispatch.models import CustodyRecord, DeliveryJob, DispatchException, JobState, Plan, Shift
from dispatch.schemas import (
    CancelIn,
    DeliveryRequest,
    FailIn,
    JobOut,
    ProofIn,
    ReassignIn,
    ScanIn,
    ShiftIn,
    TaskAckIn,
    TransitionOut,
)
from serena.deps import Db, Redis, SettingsDep, require

router = APIRouter(tags=["dispatch"])

IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=8, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$",
                                       description="the same key twice returns the same delivery")]
MAX_PHOTO_BYTES = 8 * 1024 * 1024
PHOTO_TYPES = {b"\xff\xd8\xff": ("image/jpeg", ".jpg"), b"\x89PNG\r\n\x1a\n": ("image/png", ".png"), b"RIFF": ("image/webp", ".webp")}


# ---- public delivery API -----------------------------------------------------------------------

@router.post("/v1/deliveries", response_model=JobOut, status_code=201)
async def create_delivery(body: DeliveryRequest, key: IdempotencyKey, response: Response, db: Db,
                          principal=require(Permission.DELIVERIES_WRITE)):
    """Create a delivery job; the same Idempotency-Key returns the same job (200 instead of 201)."""
    job, created = await service.create_job(db=db, request=body, idempotency_key=f"api:{key}", source="api",
                                            actor=str(principal.user_id))
    if not created:
        response.status_code = 200
    return service.job_out(job)


@router.get("/v1/deliveries/{job_id}", response_model=JobOut)
async def get_delivery(job_id: uuid.UUID, db: Db, _=require(Permission.FLEET_READ)):
    """One delivery job."""
    return service.job_out(await service.get_job(db=db, job_id=job_id))


@router.get("/v1/deliveries/{job_id}/history", response_model=list[TransitionOut])
async def delivery_history(job_id: uuid.UUID, db: Db, _=require(Permission.FLEET_READ)):
    """Every state the job went through."""
    await service.get_job(db=db, job_id=job_id)
    return [TransitionOut.model_validate(t) for t in await service.history(db=db, job_id=job_id)]


@router.post("/v1/deliveries/{job_id}/cancel", response_model=JobOut)
async def cancel_delivery(job_id: uuid.UUID, body: CancelIn, db: Db, principal=require(Permission.DELIVERIES_WRITE)):
    """Cancel a delivery that is not picked up yet."""
    return service.job_out(await service.cancel_job(db=db, job_id=job_id, reason=body.reason, actor=str(principal.user_id)))


@router.get("/v1/deliveries/{job_id}/label.pdf")
async def delivery_label(job_id: uuid.UUID, db: Db, _=require(Permission.FLEET_READ)):
    """Printable package label (A6) with QR code and Code 128 barcode."""
    job = await service.get_job(db=db, job_id=job_id)
    return Response(labels.label_pdf([job]), media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="label-{job.package_code}.pdf"'})


# ---- driver ------------------------------------------------------------------------------------------

async def _driver(db, principal):
    return await service.driver_for_user(db=db, user_id=principal.user_id)


@router.post("/v1/driver/shift/start")
async def shift_start(body: ShiftIn, db: Db, principal=require(Permission.DRIVER_SELF)):
    """Go on duty."""
    driver = await _driver(db, principal)
    shift = await service.start_shift(db=db, driver=driver, vehicle_id=body.vehicle_id, lat=body.lat, lng=body.lng)
    return {"driver_id": driver.id, "shift_id": shift.id, "on_duty_since": shift.started_at}


@router.post("/v1/driver/shift/end")
async def shift_end(db: Db, principal=require(Permission.DRIVER_SELF)):
    """Go off duty; jobs not picked up yet go back to the planner."""
    driver = await _driver(db, principal)
    shift = await service.end_shift(db=db, driver=driver, actor=f"driver:{driver.id}")
    return {"driver_id": driver.id, "shift_id": shift.id, "ended_at": shift.ended_at}


@router.get("/v1/driver/tasks")
async def driver_tasks(db: Db, redis: Redis, settings: SettingsDep, principal=require(Permission.DRIVER_SELF)):
    """The driver's current task list (the same document as the MQTT retained message)."""
    driver = await _driver(db, principal)
    raw = await redis.get(f"{settings.redis_prefix}tasks:last:{driver.id}")
    if raw:
        return json.loads(raw)
    return {"version": 0, "driver_id": driver.id, "stops": []}


@router.post("/v1/driver/tasks/ack", status_code=204)
async def ack_tasks(body: TaskAckIn, db: Db, principal=require(Permission.DRIVER_SELF)):
    """Acknowledge a task-list version."""
    await service.ack_tasks(db=db, driver=await _driver(db, principal), version=body.version)


@router.post("/v1/driver/scans")
async def driver_scan(body: ScanIn, db: Db, settings: SettingsDep, principal=require(Permission.DRIVER_SELF)):
    """Pickup scan at the depot, or delivery scan at the door (geofence checked, override with a reason)."""
    driver = await _driver(db, principal)
    job, record = await service.scan(db=db, driver=driver, body=body, geofence_radius_m=settings.dispatch_geofence_radius_m)
    return {"job_id": str(job.id), "state": job.state, "custody_hash": record.hash, "inside_geofence": record.inside_geofence}


@router.post("/v1/driver/deliveries/{job_id}/proof")
async def delivery_proof(job_id: uuid.UUID, body: ProofIn, db: Db, settings: SettingsDep, principal=require(Permission.DRIVER_SELF)):
    """Proof by signature (SVG) or the customer's one-time code; completes the delivery."""
    driver = await _driver(db, principal)
    if body.kind == "otp":
        if body.otp != service.delivery_otp(settings.jwt_secret, job_id):
            raise ValidationFailed("otp: the code does not match this delivery")
        digest = storage.sha256_hex(f"otp:{job_id}".encode())
        key = ""
    else:
        if not body.signature_svg or "<svg" not in body.signature_svg[:200]:
            raise ValidationFailed("signature_svg: an SVG document is required for a signature proof")
        data = body.signature_svg.encode()
        digest = storage.sha256_hex(data)
        key = storage.LocalObjectStore(settings.data_dir / "objects").put("proofs", storage.content_key(data, suffix=".svg"), data)
    job = await service.complete_with_proof(db=db, driver=driver, job_id=job_id, proof_kind=body.kind, proof_sha256=digest,
                                            proof_key=key)
    return {"job_id": str(job.id), "state": job.state, "proof_sha256": digest}


@router.post("/v1/driver/deliveries/{job_id}/photo")
async def delivery_photo(job_id: uuid.UUID, db: Db, settings: SettingsDep, photo: UploadFile = File(...),
                         principal=require(Permission.DRIVER_SELF)):
    """Proof by photo (JPEG, PNG or WebP, at most 8 MiB); stored by content hash; completes the delivery."""
    driver = await _driver(db, principal)
    data = await photo.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise ValidationFailed(f"photo: larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MiB")
    kind = next(((t, ext) for magic, (t, ext) in PHOTO_TYPES.items() if data.startswith(magic)), None)
    if kind is None:
        raise ValidationFailed("photo: not a JPEG, PNG or WebP image")
    key = storage.LocalObjectStore(settings.data_dir / "objects").put("proofs", storage.content_key(data, suffix=kind[1]), data,
                                                                     content_type=kind[0])
    job = await service.complete_with_proof(db=db, driver=driver, job_id=job_id, proof_kind="photo",
                                            proof_sha256=storage.sha256_hex(data), proof_key=key)
    return {"job_id": str(job.id), "state": job.state, "proof_sha256": storage.sha256_hex(data)}


@router.post("/v1/driver/deliveries/{job_id}/fail")
async def delivery_failed(job_id: uuid.UUID, body: FailIn, db: Db, principal=require(Permission.DRIVER_SELF)):
    """A failed attempt (customer absent, refused, address wrong): re-attempt or return to depot."""
    job = await service.fail_delivery(db=db, driver=await _driver(db, principal), job_id=job_id, body=body)
    return {"job_id": str(job.id), "state": job.state, "attempts": job.attempts, "next": job.state_reason}


@router.post("/v1/driver/returns/{code}")
async def returned_to_depot(code: str, db: Db, principal=require(Permission.DRIVER_SELF)):
    """Scan a failed parcel back in at the depot."""
    job = await service.return_to_depot(db=db, driver=await _driver(db, principal), code=code)
    return {"job_id": str(job.id), "state": job.state}


# ---- fleet (dispatchers) ---------------------------------------------------------------------------------

@router.get("/v1/fleet/jobs", response_model=list[JobOut])
async def fleet_jobs(db: Db, _=require(Permission.FLEET_READ), state: str | None = None, driver_id: int | None = None):
    """Open jobs (or those in `state`), in route order per driver."""
    q = select(DeliveryJob)
    q = q.where(DeliveryJob.state == state) if state else q.where(DeliveryJob.state.in_(planner.OPEN_STATES))
    if driver_id is not None:
        q = q.where(DeliveryJob.driver_id == driver_id)
    q = q.order_by(DeliveryJob.driver_id.nulls_last(), DeliveryJob.sequence.nulls_last(), DeliveryJob.created_at).limit(5000)
    return [service.job_out(j) for j in (await db.execute(q)).scalars()]


@router.post("/v1/fleet/jobs/{job_id}/reassign", response_model=JobOut)
async def reassign_job(job_id: uuid.UUID, body: ReassignIn, db: Db, principal=require(Permission.FLEET_WRITE)):
    """Move a job not yet picked up to another on-duty driver; the planner re-plans around it."""
    return service.job_out(await service.reassign(db=db, job_id=job_id, driver_id=body.driver_id,
                                                  actor=str(principal.user_id), reason=body.reason))


@router.get("/v1/fleet/exceptions")
async def fleet_exceptions(db: Db, _=require(Permission.FLEET_READ)):
    """Open exceptions, highest risk to the promise first, each with its suggested action."""
    rows = (await db.execute(select(DispatchException).where(DispatchException.resolved_at.is_(None))
                             .order_by(DispatchException.risk.desc(), DispatchException.created_at))).scalars()
    return [{"id": e.id, "kind": e.kind, "subject": e.subject, "job_id": e.job_id, "driver_id": e.driver_id, "risk": e.risk,
             "detail": e.detail, "suggested_action": e.suggested_action, "since": e.created_at} for e in rows]


@router.get("/v1/fleet/kpis")
async def fleet_kpis(db: Db, _=require(Permission.FLEET_READ)):
    """On-time %, done/remaining, utilisation of on-duty drivers, latest plan."""
    counts = dict((await db.execute(select(DeliveryJob.state, func.count()).group_by(DeliveryJob.state))).all())
    delivered = counts.get(JobState.DELIVERED.value, 0)
    on_time = (await db.execute(select(func.count()).select_from(DeliveryJob).join(
        CustodyRecord, (CustodyRecord.job_id == DeliveryJob.id) & (CustodyRecord.kind == "proof"))
        .where(DeliveryJob.state == JobState.DELIVERED.value, CustodyRecord.at <= DeliveryJob.window_end))).scalar()
    on_duty = (await db.execute(select(func.count()).select_from(Shift).where(Shift.ended_at.is_(None)))).scalar()
    busy = (await db.execute(select(func.count(func.distinct(DeliveryJob.driver_id))).where(
        DeliveryJob.state.in_(planner.OPEN_STATES), DeliveryJob.driver_id.is_not(None)))).scalar()
    plan = (await db.execute(select(Plan).order_by(Plan.version.desc()).limit(1))).scalar()
    remaining = sum(v for k, v in counts.items() if k in planner.OPEN_STATES)
    return {
        "delivered": delivered, "failed": counts.get(JobState.FAILED.value, 0), "returned": counts.get(JobState.RETURNED.value, 0),
        "remaining": remaining, "on_time_pct": round(100 * on_time / delivered, 1) if delivered else None,
        "drivers_on_duty": on_duty, "utilisation_pct": round(100 * busy / on_duty, 1) if on_duty else None,
        "plan": None if plan is None else {"version": plan.version, "at": plan.created_at, "churn": plan.churn,
                                            "solve_ms": plan.solve_ms, "unassigned": len(plan.unassigned)},
        "by_state": counts,
    }


@router.get("/v1/fleet/plan")
async def fleet_plan(db: Db, _=require(Permission.FLEET_READ)):
    """The latest plan: routes per driver with ETAs, unassigned jobs with reasons."""
    plan = (await db.execute(select(Plan).order_by(Plan.version.desc()).limit(1))).scalar()
    if plan is None:
        return {"version": None, "routes": {}, "unassigned": {}}
    return {"version": plan.version, "at": plan.created_at, "reason": plan.reason, "routes": plan.routes,
            "unassigned": plan.unassigned, "churn": plan.churn, "solve_ms": plan.solve_ms}
