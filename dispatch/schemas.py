"""Pydantic shapes of the dispatch API: delivery requests, jobs, scans, proof, task lists."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.schemas import Lat, Lng, Strict


class Place(Strict):
    lat: Lat
    lng: Lng
    address: Annotated[str, Field(max_length=500)] = ""


class DeliveryRequest(Strict):
    """A delivery to plan: from the public API, or built from an `order.paid` event."""

    reference: Annotated[str, Field(max_length=64)] = ""
    depot_id: int | None = Field(None, description="pickup depot; default: the nearest depot to the drop-off")
    pickup: Place | None = Field(None, description="pickup point when not a depot")
    dropoff: Place
    recipient_name: Annotated[str, Field(max_length=200)] = ""
    recipient_phone: Annotated[str, Field(max_length=32)] = ""
    window_start: datetime
    window_end: datetime
    service_s: Annotated[float, Field(ge=0, le=3600)] = 120
    weight_kg: Annotated[float, Field(ge=0, le=5000, allow_inf_nan=False)] = 1
    volume_l: Annotated[float, Field(ge=0, le=20000, allow_inf_nan=False)] = 5
    parcels: Annotated[int, Field(ge=1, le=500)] = 1
    priority: Annotated[int, Field(ge=0, le=10)] = 0
    skills: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]] = []

    @model_validator(mode="after")
    def _window(self) -> DeliveryRequest:
        if self.window_start.tzinfo is None or self.window_end.tzinfo is None:
            raise ValueError("window_start and window_end need a time zone (e.g. 2026-11-25T14:00:00Z)")
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    reference: str
    source: str
    package_code: str
    state: str
    state_reason: str
    attempts: int
    depot_id: int | None
    pickup: Place
    dropoff: Place
    recipient_name: str
    window_start: datetime
    window_end: datetime
    weight_kg: float
    volume_l: float
    parcels: int
    priority: int
    skills: list[str]
    driver_id: int | None
    plan_version: int | None
    sequence: int | None
    eta: datetime | None
    created_at: datetime


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_state: str | None
    to_state: str
    reason: str
    actor: str
    at: datetime


class CancelIn(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class FailIn(Strict):
    reason: Literal["customer_absent", "refused", "address_wrong", "damaged", "other"]
    note: Annotated[str, Field(max_length=500)] = ""
    lat: Lat | None = None
    lng: Lng | None = None
    return_to_depot: bool = False


class ScanIn(Strict):
    kind: Literal["pickup", "delivery"]
    code: Annotated[str, Field(min_length=4, max_length=64)]
    lat: Lat
    lng: Lng
    accuracy_m: Annotated[float, Field(ge=0, le=5000, allow_inf_nan=False)] = 10.0
    override_reason: Annotated[str, Field(max_length=500)] = ""


class ProofIn(Strict):
    kind: Literal["signature", "otp"]
    signature_svg: Annotated[str | None, Field(max_length=200_000)] = None
    otp: Annotated[str | None, Field(pattern=r"^\d{4,8}$")] = None


class ShiftIn(Strict):
    vehicle_id: int | None = None
    lat: Lat | None = None
    lng: Lng | None = None


class TaskAckIn(Strict):
    version: Annotated[int, Field(ge=1)]


class ReassignIn(Strict):
    driver_id: int
    reason: Annotated[str, Field(min_length=1, max_length=500)]
