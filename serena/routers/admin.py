"""Back office: users and roles, drivers, depots, vehicles, service zones, and the audit log.

Every state change goes through a service function that writes its audit entry in the same
transaction (the request's), so a change and its record commit or vanish together.
"""

from __future__ import annotations

import secrets
import uuid

import logging

from fastapi import APIRouter, BackgroundTasks, Query, Request
from geoalchemy2.shape import from_shape
from shapely.geometry import MultiPolygon, shape
from sqlalchemy import func, select

from core import audit, identity, mqtt
from core.errors import Conflict, NotFound, ValidationFailed
from core.models import AuditEntry, Depot, Driver, ServiceZone, User, Vehicle
from core.rbac import Permission, Role
from core.schemas import (
    AuditOut,
    AuditVerifyOut,
    DepotIn,
    DepotOut,
    DriverCreatedOut,
    DriverCreateIn,
    DriverOut,
    RoleIn,
    UserCreateIn,
    UserOut,
    VehicleIn,
    VehicleOut,
    ZoneIn,
    ZoneOut,
)
from serena.deps import Db, load_user, require
from serena.routers.auth import user_out

router = APIRouter(prefix="/v1/admin", tags=["admin"])


# ---- users and roles -------------------------------------------------------------------------

@router.get("/users", response_model=list[UserOut])
async def list_users(db: Db, _=require(Permission.USERS_READ), limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)):
    """Users, newest first."""
    rows = (await db.execute(select(User).order_by(User.created_at.desc()).limit(limit).offset(offset))).scalars()
    return [user_out(u) for u in rows]


@router.post("/users", response_model=UserOut, status_code=201)
async def create_user(body: UserCreateIn, db: Db, principal=require(Permission.USERS_WRITE)):
    """Create a user with the given roles (staff roles must enrol TOTP before their permissions apply)."""
    actor = await load_user(db, principal)
    user = await identity.create_user(db=db, email=body.email, password=body.password, full_name=body.full_name, roles=set(body.roles))
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="user.created", object_type="user",
                       object_id=user.id, after={"email": user.email, "roles": sorted(r.value for r in body.roles)})
    await db.refresh(user)
    return user_out(user)


@router.post("/users/{user_id}/roles", response_model=UserOut)
async def grant_role(user_id: uuid.UUID, body: RoleIn, db: Db, principal=require(Permission.USERS_WRITE)):
    """Grant a role."""
    actor = await load_user(db, principal)
    return user_out(await identity.grant_role(db=db, actor=actor, user_id=user_id, role=body.role))


@router.delete("/users/{user_id}/roles/{role}", response_model=UserOut)
async def revoke_role(user_id: uuid.UUID, role: Role, db: Db, principal=require(Permission.USERS_WRITE)):
    """Revoke a role."""
    actor = await load_user(db, principal)
    return user_out(await identity.revoke_role(db=db, actor=actor, user_id=user_id, role=role))


@router.post("/users/{user_id}/deactivate", response_model=UserOut)
async def deactivate_user(user_id: uuid.UUID, db: Db, principal=require(Permission.USERS_WRITE)):
    """Disable an account and revoke its sessions."""
    actor = await load_user(db, principal)
    if actor.id == user_id:
        raise Conflict("you cannot deactivate your own account")
    return user_out(await identity.set_active(db=db, actor=actor, user_id=user_id, active=False))


# ---- drivers ---------------------------------------------------------------------------------

def _mqtt_hash(password: str) -> str | None:
    """The broker's password hash, when the broker module is present (it owns the format)."""
    try:
        from serena import broker
    except ModuleNotFoundError:
        return None
    return broker.hash_mqtt_password(password)


async def _sync_broker(app) -> None:
    """After the commit: regenerate our broker's password file and ACL and make it reload."""
    from serena import broker

    try:
        await broker.sync_broker_credentials(pool_or_session=app.state.pg_pool, settings=app.state.settings)
    except Exception:  # the driver exists either way; the next sync (any driver change, `serena services up`) catches up
        logging.getLogger("serena.api").exception("broker credential sync failed")


@router.post("/drivers", response_model=DriverCreatedOut, status_code=201)
async def create_driver(body: DriverCreateIn, request: Request, background: BackgroundTasks, db: Db,
                        principal=require(Permission.FLEET_WRITE)):
    """Create a driver account with broker credentials of its own (the MQTT password is shown once)."""
    actor = await load_user(db, principal)
    mqtt_password = secrets.token_urlsafe(18)
    driver = await identity.create_driver(db=db, actor=actor, email=body.email, password=body.password,
                                          display_name=body.display_name, phone=body.phone,
                                          mqtt_password_hash=_mqtt_hash(mqtt_password))
    out = DriverOut.model_validate(driver).model_dump()
    # Commit before the broker sync is scheduled: background tasks run before the request's
    # `get_db` dependency exits (FastAPI runs yield-dependency teardown after the response and
    # its background tasks), so without this the sync read the table without this driver and
    # the last driver of a burst could never connect (seen: 1 of 20 refused for good).
    await db.commit()
    background.add_task(_sync_broker, request.app)
    return DriverCreatedOut(**out, mqtt_username=mqtt.driver_username(driver.id), mqtt_password=mqtt_password)


@router.get("/drivers", response_model=list[DriverOut])
async def list_drivers(db: Db, _=require(Permission.FLEET_READ)):
    """All drivers."""
    return [DriverOut.model_validate(d) for d in (await db.execute(select(Driver).order_by(Driver.id))).scalars()]


# ---- depots, vehicles, zones -------------------------------------------------------------------

@router.post("/depots", response_model=DepotOut, status_code=201)
async def create_depot(body: DepotIn, db: Db, principal=require(Permission.FLEET_WRITE)):
    """Add a depot."""
    actor = await load_user(db, principal)
    if (await db.execute(select(Depot.id).where(Depot.name == body.name))).first():
        raise Conflict(f"depot name already used: {body.name}")
    depot = Depot(name=body.name, location=f"SRID=4326;POINT({body.lng} {body.lat})", address=body.address)
    db.add(depot)
    await db.flush()
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="depot.created", object_type="depot",
                       object_id=depot.id, after=body.model_dump())
    return DepotOut(id=depot.id, name=depot.name, lat=body.lat, lng=body.lng, address=depot.address)


@router.get("/depots", response_model=list[DepotOut])
async def list_depots(db: Db, _=require(Permission.FLEET_READ)):
    """All depots."""
    rows = await db.execute(select(Depot.id, Depot.name, func.ST_Y(Depot.location), func.ST_X(Depot.location), Depot.address).order_by(Depot.id))
    return [DepotOut(id=i, name=n, lat=lat, lng=lng, address=a) for i, n, lat, lng, a in rows]


@router.post("/vehicles", response_model=VehicleOut, status_code=201)
async def create_vehicle(body: VehicleIn, db: Db, principal=require(Permission.FLEET_WRITE)):
    """Add a vehicle."""
    actor = await load_user(db, principal)
    if (await db.execute(select(Vehicle.id).where(Vehicle.plate == body.plate))).first():
        raise Conflict(f"vehicle plate already used: {body.plate}")
    if body.depot_id is not None and await db.get(Depot, body.depot_id) is None:
        raise NotFound(f"no depot {body.depot_id}")
    vehicle = Vehicle(**body.model_dump())
    db.add(vehicle)
    await db.flush()
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="vehicle.created", object_type="vehicle",
                       object_id=vehicle.id, after=body.model_dump())
    return VehicleOut.model_validate(vehicle)


@router.get("/vehicles", response_model=list[VehicleOut])
async def list_vehicles(db: Db, _=require(Permission.FLEET_READ)):
    """All vehicles."""
    return [VehicleOut.model_validate(v) for v in (await db.execute(select(Vehicle).order_by(Vehicle.id))).scalars()]


def _zone_geometry(geojson: dict) -> MultiPolygon:
    try:
        geom = shape(geojson)
    except Exception as exc:  # shapely raises several types for malformed GeoJSON
        raise ValidationFailed(f"geometry is not valid GeoJSON: {exc}") from None
    if geom.is_empty:
        raise ValidationFailed("geometry is empty")
    if not geom.is_valid:
        from shapely.validation import explain_validity

        raise ValidationFailed(f"geometry is not a valid polygon: {explain_validity(geom)}")
    for x, y in (geom.bounds[:2], geom.bounds[2:]):
        if not (-180 <= x <= 180 and -90 <= y <= 90):
            raise ValidationFailed("geometry coordinates must be lng/lat in WGS84 degrees")
    return geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom])


@router.post("/zones", response_model=ZoneOut, status_code=201)
async def create_zone(body: ZoneIn, db: Db, principal=require(Permission.FLEET_WRITE)):
    """Add a service zone (GeoJSON polygon)."""
    actor = await load_user(db, principal)
    geom = _zone_geometry(body.geometry)
    if (await db.execute(select(ServiceZone.id).where(ServiceZone.code == body.code))).first():
        raise Conflict(f"zone code already used: {body.code}")
    zone = ServiceZone(code=body.code, name=body.name, kind=body.kind, area=from_shape(geom, srid=4326),
                       base_fee=body.base_fee, currency=body.currency)
    db.add(zone)
    await db.flush()
    area_m2 = (await db.execute(select(func.ST_Area(func.geography(ServiceZone.area))).where(ServiceZone.id == zone.id))).scalar()
    await audit.record(db, actor_id=actor.id, actor_email=actor.email, action="zone.created", object_type="zone",
                       object_id=zone.id, after={"code": body.code, "name": body.name, "kind": body.kind, "wkt": geom.wkt[:2000]})
    return ZoneOut(id=zone.id, code=zone.code, name=zone.name, kind=zone.kind, base_fee=zone.base_fee,
                   currency=zone.currency, area_km2=round(area_m2 / 1e6, 4))


@router.get("/zones", response_model=list[ZoneOut])
async def list_zones(db: Db, _=require(Permission.FLEET_READ)):
    """All service zones."""
    rows = await db.execute(select(ServiceZone, func.ST_Area(func.geography(ServiceZone.area))).order_by(ServiceZone.id))
    return [ZoneOut(id=z.id, code=z.code, name=z.name, kind=z.kind, base_fee=z.base_fee, currency=z.currency,
                    area_km2=round(a / 1e6, 4)) for z, a in rows]


# ---- audit -------------------------------------------------------------------------------------

@router.get("/audit", response_model=list[AuditOut])
async def list_audit(db: Db, _=require(Permission.AUDIT_READ), limit: int = Query(100, ge=1, le=1000),
                     before_id: int | None = Query(None, ge=1)):
    """Audit entries, newest first."""
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id:
        q = q.where(AuditEntry.id < before_id)
    return [AuditOut.model_validate(e) for e in (await db.execute(q)).scalars()]


@router.get("/audit/verify", response_model=AuditVerifyOut)
async def verify_audit(request: Request, _=require(Permission.AUDIT_READ)):
    """Recompute the whole hash chain."""
    async with request.app.state.pg_pool.acquire() as conn:
        report = await audit.verify_chain(conn)
    return AuditVerifyOut(entries=report.entries, ok=report.ok, first_bad_id=report.first_bad_id, reason=report.reason)
