"""Pydantic shapes of the kernel's API: sign-in, tokens, users, fleet assets, zones."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.rbac import Role

Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False, description="latitude, WGS84 degrees")]
Lng = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False, description="longitude, WGS84 degrees")]
Password = Annotated[str, Field(min_length=10, max_length=256)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(Strict):
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    password: Password
    full_name: Annotated[str, Field(max_length=200)] = ""


class LoginIn(Strict):
    email: Annotated[str, Field(min_length=3, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=256)]
    totp_code: Annotated[str | None, Field(pattern=r"^\d{6}$")] = None


class RefreshIn(Strict):
    refresh_token: Annotated[str, Field(min_length=20, max_length=200)]


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in_s: int
    mfa: bool


class TotpSetupOut(BaseModel):
    otpauth_uri: str


class TotpConfirmIn(Strict):
    code: Annotated[str, Field(pattern=r"^\d{6}$")]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str
    is_active: bool
    roles: list[str]
    totp_enrolled: bool
    created_at: datetime


class UserCreateIn(Strict):
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    password: Password
    full_name: Annotated[str, Field(max_length=200)] = ""
    roles: Annotated[list[Role], Field(min_length=1)]


class RoleIn(Strict):
    role: Role


class DriverCreateIn(Strict):
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    password: Password
    display_name: Annotated[str, Field(min_length=1, max_length=120)]
    phone: Annotated[str, Field(max_length=32)] = ""


class DriverOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: uuid.UUID
    display_name: str
    phone: str
    vehicle_id: int | None
    depot_id: int | None
    active: bool


class DriverCreatedOut(DriverOut):
    mqtt_username: str
    mqtt_password: str = Field(description="shown once; only its hash is stored")


class DepotIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    lat: Lat
    lng: Lng
    address: Annotated[str, Field(max_length=500)] = ""


class DepotOut(BaseModel):
    id: int
    name: str
    lat: float
    lng: float
    address: str


class VehicleIn(Strict):
    plate: Annotated[str, Field(min_length=1, max_length=32)]
    kind: Literal["van", "truck", "car", "bike", "cargo_bike", "scooter"] = "van"
    capacity_weight_kg: Annotated[float, Field(ge=0, le=50_000, allow_inf_nan=False)] = 800
    capacity_volume_l: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] = 6000
    capacity_parcels: Annotated[int, Field(ge=0, le=10_000)] = 120
    skills: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]] = []
    depot_id: int | None = None


class VehicleOut(VehicleIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: int


class ZoneIn(Strict):
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    name: Annotated[str, Field(min_length=1, max_length=120)]
    kind: Literal["delivery", "depot", "dropoff"] = "delivery"
    geometry: dict = Field(description="GeoJSON Polygon or MultiPolygon, lng/lat order")
    base_fee: Annotated[str, Field(pattern=r"^\d{1,7}(\.\d{1,2})?$")] = "0.00"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"

    @field_validator("geometry")
    @classmethod
    def _polygonal(cls, v: dict) -> dict:
        if v.get("type") not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"geometry must be a GeoJSON Polygon or MultiPolygon, got type {v.get('type')!r}")
        return v


class ZoneOut(BaseModel):
    id: int
    code: str
    name: str
    kind: str
    base_fee: str
    currency: str
    area_km2: float


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_email: str
    action: str
    object_type: str
    object_id: str
    before: dict | None
    after: dict | None
    hash: str


class AuditVerifyOut(BaseModel):
    entries: int
    ok: bool
    first_bad_id: int | None
    reason: str
