"""Dispatch use cases: jobs from orders and the delivery API, shifts, scans, proof, failures, reassignment.

Plain async functions with keyword-only arguments; no HTTP here. Each state change goes
through `dispatch.lifecycle.transition` (history + `delivery.*` event in the same
transaction); each scan and proof appends to the job's hash-chained custody record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import uuid
from datetime import UTC, datetime

from geoalchemy2.elements import WKTElement
from geoalchemy2.shape import to_shape
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core import events
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.models import Depot, Driver
from dispatch import lifecycle
from dispatch.models import (
    CustodyRecord,
    DeliveryJob,
    DispatchException,
    JobState,
    JobTransition,
    Shift,
    TaskListAck,
)
from dispatch.schemas import DeliveryRequest, FailIn, JobOut, Place, ScanIn

S = JobState
GENESIS = "0" * 64
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by drivers


def point(lat: float, lng: float) -> WKTElement:
    return WKTElement(f"POINT({lng} {lat})", srid=4326)


_LATLNG_CACHE: dict[str | bytes, tuple[float, float]] = {}


def latlng(geom) -> tuple[float, float]:
    """(lat, lng) of a point geometry; WKT we wrote ourselves is read without shapely (the
    planner asks thousands of times per plan), anything else goes through `to_shape`."""
    data = getattr(geom, "data", None)
    if isinstance(data, str):
        hit = _LATLNG_CACHE.get(data)
        if hit is not None:
            return hit
        if data.startswith("POINT(") and data.endswith(")"):
            lng_s, lat_s = data[6:-1].split()
            value = (float(lat_s), float(lng_s))
            if len(_LATLNG_CACHE) > 200_000:
                _LATLNG_CACHE.clear()
            _LATLNG_CACHE[data] = value
            return value
    key = bytes(data) if isinstance(data, (bytes, memoryview)) else None  # WKB from the database
    if key is not None and (hit := _LATLNG_CACHE.get(key)) is not None:
        return hit
    p = to_shape(geom)
    value = (p.y, p.x)
    if key is not None:
        if len(_LATLNG_CACHE) > 200_000:
            _LATLNG_CACHE.clear()
        _LATLNG_CACHE[key] = value
    return value


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def job_out(job: DeliveryJob) -> JobOut:
    plat, plng = latlng(job.pickup)
    dlat, dlng = latlng(job.dropoff)
    data = {c: getattr(job, c) for c in JobOut.model_fields if c not in ("pickup", "dropoff")}
    return JobOut(**data, pickup=Place(lat=plat, lng=plng), dropoff=Place(lat=dlat, lng=dlng, address=job.address))


def delivery_otp(secret: str, job_id: uuid.UUID) -> str:
    """The job's one-time delivery code (6 digits), derived rather than stored.

    The customer sees it on their tracking page and tells the driver; deriving it with an
    HMAC means no code sits in the database or in events.
    """
    digest = hmac.new(secret.encode(), f"delivery-otp:{job_id}".encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 1_000_000:06d}"


def _request_hash(request: DeliveryRequest) -> str:
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def new_package_code() -> str:
    return "SRN" + "".join(secrets.choice(_CODE_ALPHABET) for _ in range(9))


async def nearest_depot(*, db: AsyncSession, lat: float, lng: float) -> Depot:
    depot = (await db.execute(select(Depot).order_by(Depot.location.op("<->")(func.ST_SetSRID(func.ST_MakePoint(lng, lat), 4326))).limit(1))).scalar()
    if depot is None:
        raise ValidationFailed("no depot exists: create one before accepting deliveries")
    return depot


async def create_job(*, db: AsyncSession, request: DeliveryRequest, idempotency_key: str, source: str,
                     actor: str) -> tuple[DeliveryJob, bool]:
    """The job for `idempotency_key`: created now (True) or the one created before (False).

    The same key with a different request is refused: a retry must be a retry.
    """
    digest = _request_hash(request)
    existing = (await db.execute(select(DeliveryJob).where(DeliveryJob.idempotency_key == idempotency_key))).scalar()
    if existing is not None:
        if existing.request_sha256 != digest:
            raise Conflict("idempotency key already used for a different delivery request")
        return existing, False
    if request.depot_id is not None:
        depot = await db.get(Depot, request.depot_id)
        if depot is None:
            raise NotFound(f"no depot {request.depot_id}")
    elif request.pickup is None:
        depot = await nearest_depot(db=db, lat=request.dropoff.lat, lng=request.dropoff.lng)
    else:
        depot = None
    pickup = point(request.pickup.lat, request.pickup.lng) if request.pickup else depot.location
    job_id = uuid.uuid4()
    values = dict(
        id=job_id, idempotency_key=idempotency_key, source=source, request_sha256=digest, reference=request.reference,
        package_code=new_package_code(), state=S.CREATED.value, state_reason="", attempts=0,
        depot_id=depot.id if depot else None, pickup=pickup, dropoff=point(request.dropoff.lat, request.dropoff.lng),
        address=request.dropoff.address, recipient_name=request.recipient_name, recipient_phone=request.recipient_phone,
        window_start=request.window_start, window_end=request.window_end, service_s=request.service_s,
        weight_kg=request.weight_kg, volume_l=request.volume_l, parcels=request.parcels, priority=request.priority,
        skills=list(request.skills),
    )
    # ON CONFLICT: two concurrent requests with one key both pass the check above; the
    # unique index lets exactly one insert, and the other returns the winner's job.
    inserted = (await db.execute(pg_insert(DeliveryJob).values(**values)
                                 .on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(DeliveryJob.id))).scalar()
    if inserted is None:
        return await create_job(db=db, request=request, idempotency_key=idempotency_key, source=source, actor=actor)
    job = await db.get(DeliveryJob, job_id)
    await lifecycle.record_created(db, job=job, actor=actor)
    return job, True


def request_from_order_paid(payload: dict) -> tuple[str, DeliveryRequest]:
    """(idempotency key, request) from commerce's `order.paid` payload (contract v1: docs/commerce.md).

    Reads the nested v1 fields (`contact`, `window`, `pickup_depot_id`) and falls back to the
    flat aliases commerce also sends, so either side can move first.
    """
    try:
        dropoff = payload["dropoff"]
        contact = payload.get("contact") or {}
        window = payload.get("window") or {}
        req = DeliveryRequest(
            reference=str(payload.get("order_number") or payload["order_id"])[:64],
            depot_id=payload.get("pickup_depot_id", payload.get("depot_id")),
            dropoff=Place(lat=dropoff["lat"], lng=dropoff["lng"], address=dropoff.get("address", "")),
            recipient_name=(contact.get("name") or payload.get("recipient_name") or "")[:200],
            recipient_phone=(contact.get("phone") or payload.get("recipient_phone") or "")[:32],
            window_start=window.get("start") or payload["window_start"],
            window_end=window.get("end") or payload["window_end"],
            weight_kg=payload.get("weight_kg", 1),
            volume_l=payload.get("volume_l", 5),
            parcels=max(1, int(payload.get("parcels", 1))),
            priority=int(payload.get("priority", 0)),
            skills=list(payload.get("skills", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"order.paid payload does not describe a delivery: {exc}") from None
    return f"order:{payload['order_id']}", req


async def get_job(*, db: AsyncSession, job_id: uuid.UUID, lock: bool = False) -> DeliveryJob:
    q = select(DeliveryJob).where(DeliveryJob.id == job_id)
    if lock:
        q = q.with_for_update()
    job = (await db.execute(q)).scalar()
    if job is None:
        raise NotFound(f"no delivery {job_id}")
    return job


async def job_by_code(*, db: AsyncSession, code: str, lock: bool = True) -> DeliveryJob | None:
    q = select(DeliveryJob).where(DeliveryJob.package_code == code.strip().upper())
    if lock:
        q = q.with_for_update()
    return (await db.execute(q)).scalar()


async def history(*, db: AsyncSession, job_id: uuid.UUID) -> list[JobTransition]:
    return list((await db.execute(select(JobTransition).where(JobTransition.job_id == job_id).order_by(JobTransition.id))).scalars())


async def cancel_job(*, db: AsyncSession, job_id: uuid.UUID, reason: str, actor: str) -> DeliveryJob:
    """Cancel before pickup; afterwards the parcel is on a van and must be delivered or returned."""
    job = await get_job(db=db, job_id=job_id, lock=True)
    if JobState(job.state) not in (S.CREATED, S.PLANNED, S.ASSIGNED):
        raise lifecycle.IllegalTransition(f"delivery is {job.state}: it can only be cancelled before pickup")
    await lifecycle.transition(db, job=job, to=S.CANCELLED, actor=actor, reason=reason)
    job.driver_id = None
    return job


# ---- drivers and shifts ---------------------------------------------------------------------

async def driver_for_user(*, db: AsyncSession, user_id: uuid.UUID) -> Driver:
    driver = (await db.execute(select(Driver).where(Driver.user_id == user_id))).scalar()
    if driver is None or not driver.active:
        raise Forbidden("this account has no active driver profile")
    return driver


async def open_shift(*, db: AsyncSession, driver_id: int) -> Shift | None:
    return (await db.execute(select(Shift).where(Shift.driver_id == driver_id, Shift.ended_at.is_(None)))).scalar()


async def start_shift(*, db: AsyncSession, driver: Driver, vehicle_id: int | None, lat: float | None, lng: float | None) -> Shift:
    """Go on duty (idempotent: an open shift is returned as is)."""
    shift = await open_shift(db=db, driver_id=driver.id)
    if shift is not None:
        return shift
    shift = Shift(driver_id=driver.id, vehicle_id=vehicle_id or driver.vehicle_id, start_lat=lat, start_lng=lng)
    db.add(shift)
    await db.flush()
    await events.emit(db, type="driver.on_duty", payload={"driver_id": driver.id, "vehicle_id": shift.vehicle_id,
                                                           "lat": lat, "lng": lng}, aggregate="driver", aggregate_id=driver.id)
    return shift


async def end_shift(*, db: AsyncSession, driver: Driver, actor: str) -> Shift:
    """Go off duty; unstarted jobs go back to the planner."""
    shift = await open_shift(db=db, driver_id=driver.id)
    if shift is None:
        raise Conflict("driver is not on duty")
    shift.ended_at = datetime.now(UTC)
    released = await release_unstarted(db=db, driver_id=driver.id, actor=actor, reason="driver went off duty")
    await events.emit(db, type="driver.off_duty", payload={"driver_id": driver.id, "released_jobs": len(released)},
                      aggregate="driver", aggregate_id=driver.id)
    return shift


async def release_unstarted(*, db: AsyncSession, driver_id: int, actor: str, reason: str) -> list[DeliveryJob]:
    """Jobs of a driver not yet picked up go back to `created` for the next plan."""
    jobs = list((await db.execute(select(DeliveryJob).where(
        DeliveryJob.driver_id == driver_id, DeliveryJob.state.in_([S.PLANNED.value, S.ASSIGNED.value]))
        .order_by(DeliveryJob.id).with_for_update())).scalars())
    for job in jobs:
        await lifecycle.transition(db, job=job, to=S.CREATED, actor=actor, reason=reason)
        job.driver_id, job.sequence, job.eta = None, None, None
    return jobs


# ---- chain of custody -----------------------------------------------------------------------

def custody_hash(prev_hash: str, record: dict) -> str:
    body = json.dumps({"prev": prev_hash, **record}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _f(x: float | None) -> float | None:
    return None if x is None else float(x)  # 10 and 10.0 must hash alike (JSON would print them differently)


def _custody_fields(r: CustodyRecord) -> dict:
    return {
        "job_id": str(r.job_id), "driver_id": r.driver_id, "kind": r.kind, "code": r.code,
        "lat": _f(r.lat), "lng": _f(r.lng), "accuracy_m": _f(r.accuracy_m), "inside_geofence": r.inside_geofence,
        "override_reason": r.override_reason, "proof_kind": r.proof_kind, "proof_sha256": r.proof_sha256,
        "proof_key": r.proof_key, "at": r.at.astimezone(UTC).isoformat(timespec="microseconds"),
    }


async def append_custody(db: AsyncSession, *, job: DeliveryJob, **fields) -> CustodyRecord:
    """Append a custody record chained to the job's previous one (the job row is locked by the caller)."""
    prev = (await db.execute(select(CustodyRecord.hash).where(CustodyRecord.job_id == job.id)
                             .order_by(CustodyRecord.id.desc()).limit(1))).scalar() or GENESIS
    record = CustodyRecord(job_id=job.id, at=datetime.now(UTC), prev_hash=prev, hash="", **{
        "code": "", "override_reason": "", "proof_kind": "", "proof_sha256": "", "proof_key": "", **fields})
    record.hash = custody_hash(prev, _custody_fields(record))
    db.add(record)
    await db.flush()
    return record


async def verify_custody(*, db: AsyncSession, job_id: uuid.UUID) -> tuple[bool, int | None]:
    """(intact, first bad record id) for one job's custody chain."""
    prev = GENESIS
    for r in (await db.execute(select(CustodyRecord).where(CustodyRecord.job_id == job_id).order_by(CustodyRecord.id))).scalars():
        if r.prev_hash != prev or custody_hash(prev, _custody_fields(r)) != r.hash:
            return False, r.id
        prev = r.hash
    return True, None


# ---- exceptions -------------------------------------------------------------------------------

async def raise_exception(db: AsyncSession, *, kind: str, subject: str, risk: float, detail: str, action: str,
                          job_id: uuid.UUID | None = None, driver_id: int | None = None) -> None:
    """Open (or refresh) the exception of `kind` about `subject`; one open row per pair."""
    stmt = pg_insert(DispatchException).values(kind=kind, subject=subject, job_id=job_id, driver_id=driver_id, risk=risk,
                                               detail=detail, suggested_action=action)
    stmt = stmt.on_conflict_do_update(index_elements=["kind", "subject"], index_where=text("resolved_at IS NULL"),
                                      set_={"risk": risk, "detail": detail, "suggested_action": action})
    await db.execute(stmt)


async def resolve_exceptions(db: AsyncSession, *, kind: str, subject: str | list[str]) -> None:
    """Close the open exception of `kind` about `subject` (or each of a list of subjects, in one statement)."""
    if isinstance(subject, list):
        if not subject:
            return
        match = DispatchException.subject.in_(subject)
    else:
        match = DispatchException.subject == subject
    await db.execute(update(DispatchException).where(DispatchException.kind == kind, match,
                                                     DispatchException.resolved_at.is_(None)).values(resolved_at=datetime.now(UTC)))


async def advance(db: AsyncSession, *, driver_id: int, actor: str) -> DeliveryJob | None:
    """Mark the driver's next stop `out_for_delivery` when none is under way (it is what the customer waits for)."""
    active = (await db.execute(select(DeliveryJob.id).where(
        DeliveryJob.driver_id == driver_id, DeliveryJob.state.in_([S.OUT_FOR_DELIVERY.value, S.ARRIVING.value])).limit(1))).first()
    if active:
        return None
    nxt = (await db.execute(select(DeliveryJob).where(DeliveryJob.driver_id == driver_id, DeliveryJob.state == S.PICKED_UP.value)
                            .order_by(DeliveryJob.sequence.nulls_last(), DeliveryJob.id).limit(1).with_for_update())).scalar()
    if nxt is not None:
        await lifecycle.transition(db, job=nxt, to=S.OUT_FOR_DELIVERY, actor=actor)
    return nxt


# ---- scans, proof, failures -----------------------------------------------------------------------

async def scan(*, db: AsyncSession, driver: Driver, body: ScanIn, geofence_radius_m: float) -> tuple[DeliveryJob, CustodyRecord]:
    """A pickup or delivery scan by `driver`, checked against their task list and the stop's geofence."""
    job = await job_by_code(db=db, code=body.code)

    async def refuse(reason: str, *, risk: float = 0.4) -> None:
        await raise_exception(db, kind="scan_refused", subject=f"{driver.id}:{body.code}", risk=risk, driver_id=driver.id,
                              job_id=job.id if job else None, detail=f"driver {driver.id} scanned {body.code}: {reason}",
                              action="check the parcel against the driver's task list")
        await db.commit()  # the refusal is evidence: keep the exception even though we answer with an error
        raise Forbidden(f"scan refused: {reason}")

    if job is None:
        await refuse("no delivery has this package code")
    if job.driver_id != driver.id:
        await refuse("this package is not on your task list")
    state = JobState(job.state)
    if body.kind == "pickup":
        if state is S.PICKED_UP:
            return job, await _last_custody(db, job, "pickup_scan")  # a repeated scan changes nothing
        if state is not S.ASSIGNED:
            await refuse(f"package is {state.value}, not waiting for pickup")
        record = await append_custody(db, job=job, driver_id=driver.id, kind="pickup_scan", code=job.package_code,
                                      lat=body.lat, lng=body.lng, accuracy_m=body.accuracy_m)
        await lifecycle.transition(db, job=job, to=S.PICKED_UP, actor=f"driver:{driver.id}")
        await advance(db, driver_id=driver.id, actor=f"driver:{driver.id}")
        return job, record
    # Delivery scan: the driver must be at the stop, or say why not.
    if state not in (S.PICKED_UP, S.OUT_FOR_DELIVERY, S.ARRIVING, S.FAILED):
        await refuse(f"package is {state.value}; a delivery scan needs it picked up")
    dlat, dlng = latlng(job.dropoff)
    distance_m = haversine_m(body.lat, body.lng, dlat, dlng)
    # Inside when even the pessimistic end of the fix's accuracy circle is within the radius
    # plus the accuracy: a fix with 30 m accuracy 90 m away may well be at the door.
    inside = distance_m <= geofence_radius_m + body.accuracy_m
    if not inside and not body.override_reason:
        await refuse(f"you are {distance_m:.0f} m from the drop-off (limit {geofence_radius_m:.0f} m); "
                     "scan at the door or give an override reason", risk=0.3)
    record = await append_custody(db, job=job, driver_id=driver.id, kind="delivery_scan", code=job.package_code,
                                  lat=body.lat, lng=body.lng, accuracy_m=body.accuracy_m, inside_geofence=inside,
                                  override_reason="" if inside else body.override_reason)
    if not inside:
        await raise_exception(db, kind="geofence_override", subject=str(job.id), job_id=job.id, driver_id=driver.id, risk=0.5,
                              detail=f"delivery scan {distance_m:.0f} m from the drop-off: {body.override_reason}",
                              action="confirm with the customer that the parcel arrived")
    if state is not S.ARRIVING:
        await lifecycle.transition(db, job=job, to=S.ARRIVING, actor=f"driver:{driver.id}", reason="delivery scan")
    return job, record


async def _last_custody(db: AsyncSession, job: DeliveryJob, kind: str) -> CustodyRecord:
    return (await db.execute(select(CustodyRecord).where(CustodyRecord.job_id == job.id, CustodyRecord.kind == kind)
                             .order_by(CustodyRecord.id.desc()).limit(1))).scalar()


async def complete_with_proof(*, db: AsyncSession, driver: Driver, job_id: uuid.UUID, proof_kind: str, proof_sha256: str,
                              proof_key: str = "") -> DeliveryJob:
    """Record proof of delivery and complete the job (needs the delivery scan first)."""
    job = await get_job(db=db, job_id=job_id, lock=True)
    if job.driver_id != driver.id:
        raise Forbidden("this delivery is not on your task list")
    if job.state == S.DELIVERED.value:
        last = await _last_custody(db, job, "proof")
        if last is not None and last.proof_sha256 == proof_sha256:
            return job  # the same proof sent again (a retry after a lost answer)
        raise lifecycle.IllegalTransition("delivery already completed with another proof")
    scan_record = await _last_custody(db, job, "delivery_scan")
    if scan_record is None or job.state != S.ARRIVING.value:
        raise lifecycle.IllegalTransition("scan the package at the drop-off before recording proof of delivery")
    await append_custody(db, job=job, driver_id=driver.id, kind="proof", code=job.package_code, lat=scan_record.lat,
                         lng=scan_record.lng, accuracy_m=scan_record.accuracy_m, inside_geofence=scan_record.inside_geofence,
                         proof_kind=proof_kind, proof_sha256=proof_sha256, proof_key=proof_key)
    await lifecycle.transition(db, job=job, to=S.DELIVERED, actor=f"driver:{driver.id}",
                               proof_kind=proof_kind, proof_sha256=proof_sha256)
    await advance(db, driver_id=driver.id, actor=f"driver:{driver.id}")
    return job


async def fail_delivery(*, db: AsyncSession, driver: Driver, job_id: uuid.UUID, body: FailIn, max_attempts: int = 2) -> DeliveryJob:
    """A failed attempt: re-attempt later, or (asked, or out of attempts) return to the depot."""
    job = await get_job(db=db, job_id=job_id, lock=True)
    if job.driver_id != driver.id:
        raise Forbidden("this delivery is not on your task list")
    reason = body.reason + (f": {body.note}" if body.note else "")
    await append_custody(db, job=job, driver_id=driver.id, kind="failed", code=job.package_code, lat=body.lat, lng=body.lng,
                         override_reason=reason)
    await lifecycle.transition(db, job=job, to=S.FAILED, actor=f"driver:{driver.id}", reason=reason,
                               failure_reason=body.reason)
    if body.return_to_depot or job.attempts >= max_attempts or body.reason in ("refused", "address_wrong"):
        job.state_reason = f"return to depot after: {reason}"
    await advance(db, driver_id=driver.id, actor=f"driver:{driver.id}")
    return job


async def return_to_depot(*, db: AsyncSession, driver: Driver, code: str) -> DeliveryJob:
    """Scan at the depot: a failed parcel is back (terminal `returned`)."""
    job = await job_by_code(db=db, code=code)
    if job is None or job.driver_id != driver.id:
        raise Forbidden("this package is not on your task list")
    await append_custody(db, job=job, driver_id=driver.id, kind="returned", code=job.package_code)
    await lifecycle.transition(db, job=job, to=S.RETURNED, actor=f"driver:{driver.id}", reason=job.state_reason)
    return job


async def reassign(*, db: AsyncSession, job_id: uuid.UUID, driver_id: int, actor: str, reason: str) -> DeliveryJob:
    """A dispatcher moves an unstarted job to another driver; the planner keeps it there (pinned)."""
    job = await get_job(db=db, job_id=job_id, lock=True)
    if JobState(job.state) not in (S.CREATED, S.PLANNED, S.ASSIGNED):
        raise lifecycle.IllegalTransition(f"delivery is {job.state}: only jobs not yet picked up can be reassigned")
    if await db.get(Driver, driver_id) is None:
        raise NotFound(f"no driver {driver_id}")
    if await open_shift(db=db, driver_id=driver_id) is None:
        raise Conflict(f"driver {driver_id} is not on duty")
    previous = job.driver_id
    if job.state != S.CREATED.value:
        await lifecycle.transition(db, job=job, to=S.CREATED, actor=actor, reason=f"reassigned: {reason}")
    job.driver_id = driver_id  # pin: the planner keeps a created job with a driver on that driver
    job.sequence, job.eta = None, None
    await events.emit(db, type="delivery.reassigned", payload={"job_id": str(job.id), "from_driver_id": previous,
                                                               "to_driver_id": driver_id, "reason": reason, "actor": actor},
                      aggregate="delivery", aggregate_id=job.id)
    return job


async def ack_tasks(*, db: AsyncSession, driver: Driver, version: int) -> None:
    """The driver app confirms it holds task-list `version` (idempotent)."""
    await db.execute(pg_insert(TaskListAck).values(driver_id=driver.id, version=version).on_conflict_do_nothing())
