"""Pydantic shapes of tracking's API (documentation and responses; the ping hot path validates by hand, see validate.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PingIn(BaseModel):
    """A GPS ping as a driver app sends it (MQTT payload, WebSocket frame, HTTP batch element)."""

    driver_id: int | None = Field(None, description="optional; if present it must be the authenticated driver")
    seq: int = Field(ge=0, description="per-driver counter; (driver, seq) is the de-duplication key")
    ts: float | str = Field(description="event time: epoch seconds, or ISO 8601 with offset")
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(None, ge=0)
    speed_mps: float | None = None
    heading_deg: float | None = None


class PingResult(BaseModel):
    seq: int | None
    status: Literal["accepted", "duplicate", "rejected"]  # duplicate = already stored: safe to drop from the buffer
    reason: str | None = None


class BatchResponse(BaseModel):
    accepted: int
    rejected: dict[str, int]  # reason -> count (duplicates included)
    results: list[PingResult]  # one per ping, in request order


class RejectionCounts(BaseModel):
    driver_id: int
    counts: dict[str, int]


class PositionRead(BaseModel):
    driver_id: int
    seq: int
    ts: float
    lat: float
    lng: float
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    edge: int | None = None
    edge_fraction: float | None = None
    received_at: float | None = None


class PlanStop(BaseModel):
    stop_id: str
    order_id: str | None = None
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    service_s: float = Field(120.0, ge=0)
    status: Literal["pending", "arrived", "done", "failed"] = "pending"


class PlanWrite(BaseModel):
    version: int = 0
    stops: list[PlanStop] = Field(max_length=500)


class LinkCreate(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)


class LinkRead(BaseModel):
    token: str
    path: str  # the customer page
    ws_path: str  # the push channel


class EtaWindow(BaseModel):
    earliest: float
    latest: float


class CustomerPosition(BaseModel):
    lat: float
    lng: float
    exact: bool  # False: the centre of a ~1 km cell, until the driver is within tracking_exact_within_stops
    ts: float | None = None
    heading_deg: float | None = None
    speed_mps: float | None = None


class TrackingView(BaseModel):
    type: str = "update"
    order_id: str
    status: Literal["scheduled", "on_the_way", "arriving", "arrived", "delivered"]
    eta: EtaWindow | None = None
    stops_before: int | None = None
    position: CustomerPosition | None = None
