"""Validation of GPS fixes: every way a ping can be refused, each with a reason that is counted.

Two stages. `parse` is stateless and runs per message: schema, NaN, coordinate ranges,
accuracy, timestamps too far in the future (beyond a clock-skew allowance) or too old.
`check_motion` needs the driver's previous fix and runs per batch: it rejects duplicates
within the batch and teleports (an implied speed from the previous fix, in event time, that
no vehicle reaches). Duplicates across batches are caught by the history table's primary
key (driver_id, seq, day) in `tracking.history`, which is the rule that survives crashes.

A message is one ping object or a JSON array of them (a driver app flushing its buffer).
The authenticated driver (MQTT topic, WebSocket/HTTP token) is the fix's driver; a payload
that names another driver is refused, never re-attributed.

Hand-written checks rather than a Pydantic model on this path: at 10,000 pings/s the
per-message budget is a few microseconds, and each check must name its own reason
(Pydantic would give "validation error" for NaN, range and type alike).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from core.settings import Settings

EARTH_RADIUS_M = 6_371_008.8
RAW_KEEP_BYTES = 1024  # how much of a refused message tracking_rejects keeps


class Reason(StrEnum):
    SCHEMA = "schema"  # not JSON, not an object, a field missing or of the wrong type
    DRIVER_MISMATCH = "driver_mismatch"  # the payload names a driver other than the authenticated one
    NAN = "nan"  # a number is NaN or infinite
    LAT_RANGE = "lat_range"  # latitude outside [-90, 90]
    LNG_RANGE = "lng_range"  # longitude outside [-180, 180]
    ACCURACY = "accuracy"  # reported accuracy missing-as-negative or worse than the limit
    FUTURE = "future"  # ts ahead of the server clock by more than the skew allowance
    TOO_OLD = "too_old"  # ts older than the maximum age
    TELEPORT = "teleport"  # implied speed from the previous fix is impossible
    DUPLICATE = "duplicate"  # (driver, seq) already accepted (re-delivery or replay)


@dataclass(frozen=True, slots=True)
class Limits:
    max_accuracy_m: float = 150.0
    future_skew_s: float = 30.0
    max_age_s: float = 86400.0
    max_speed_mps: float = 70.0

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.tracking_max_accuracy_m, settings.tracking_future_skew_s,
                   settings.tracking_max_age_s, settings.tracking_max_speed_mps)


@dataclass(slots=True)
class Fix:
    """An accepted fix. Times are epoch seconds (float, UTC)."""

    driver_id: int
    seq: int
    ts: float
    lat: float
    lng: float
    accuracy_m: float | None
    speed_mps: float | None
    heading_deg: float | None
    received_at: float
    source: int = 0
    edge: int | None = None  # set by map matching
    edge_fraction: float | None = None
    late: bool = False  # older than the driver's newest fix: history only, no events, no live update
    published_at: float | None = None  # optional client field "sent_at" (benchmarks measure latency from it)

    def to_live(self) -> dict[str, Any]:
        """The live-state / push representation."""
        d = {"driver_id": self.driver_id, "seq": self.seq, "ts": self.ts, "lat": self.lat, "lng": self.lng,
             "accuracy_m": self.accuracy_m, "speed_mps": self.speed_mps, "heading_deg": self.heading_deg,
             "edge": self.edge, "edge_fraction": self.edge_fraction, "received_at": self.received_at}
        if self.published_at is not None:
            d["sent_at"] = self.published_at
        return d


@dataclass(slots=True)
class Rejected:
    """A refused fix (or message) with its reason; stored in tracking_rejects and counted."""

    driver_id: int
    reason: Reason
    seq: int | None = None
    ts: float | None = None
    raw: str = ""
    received_at: float = 0.0
    source: int = 0


_isfinite = math.isfinite


def _num(obj: dict, key: str, *, required: bool) -> float | None:
    v = obj.get(key)
    t = type(v)  # type() not isinstance(): bool is an int subclass and must be refused; ~3x faster too
    if t is float:
        if not _isfinite(v):
            raise _Refuse(Reason.NAN, key)
        return v
    if t is int:
        return float(v)
    if v is None:
        if required:
            raise _Refuse(Reason.SCHEMA, f"{key} missing")
        return None
    raise _Refuse(Reason.SCHEMA, f"{key} is not a number")


class _Refuse(Exception):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail


def parse_ts(v: Any) -> float:
    """Epoch seconds from a number (seconds) or an ISO 8601 string with an offset."""
    t = type(v)
    if t is float or t is int:
        v = float(v)
        if not _isfinite(v):
            raise _Refuse(Reason.NAN, "ts")
        return v
    if t is str:
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise _Refuse(Reason.SCHEMA, "ts is not ISO 8601") from None
        if dt.tzinfo is None:
            raise _Refuse(Reason.SCHEMA, "ts has no UTC offset")
        return dt.timestamp()
    raise _Refuse(Reason.SCHEMA, "ts missing" if v is None else "ts is not a time")


def _one(obj: Any, *, driver_id: int, now: float, limits: Limits, source: int) -> Fix:
    if not isinstance(obj, dict):
        raise _Refuse(Reason.SCHEMA, "not an object")
    claimed = obj.get("driver_id")
    if claimed is not None and (isinstance(claimed, bool) or claimed != driver_id):
        raise _Refuse(Reason.DRIVER_MISMATCH)
    seq = obj.get("seq")
    if type(seq) is not int or seq < 0 or seq >= 2**63:
        raise _Refuse(Reason.SCHEMA, "seq must be a non-negative integer")
    ts = parse_ts(obj.get("ts"))
    lat = _num(obj, "lat", required=True)
    lng = _num(obj, "lng", required=True)
    acc = _num(obj, "accuracy_m", required=False)
    speed = _num(obj, "speed_mps", required=False)
    heading = _num(obj, "heading_deg", required=False)
    if not -90.0 <= lat <= 90.0:
        raise _Refuse(Reason.LAT_RANGE)
    if not -180.0 <= lng <= 180.0:
        raise _Refuse(Reason.LNG_RANGE)
    if acc is not None and (acc < 0 or acc > limits.max_accuracy_m):
        raise _Refuse(Reason.ACCURACY)
    if ts > now + limits.future_skew_s:
        raise _Refuse(Reason.FUTURE)
    if ts < now - limits.max_age_s:
        raise _Refuse(Reason.TOO_OLD)
    if speed is not None and speed < 0:
        speed = None  # Android reports -1 for "unknown"; not worth refusing the position for
    if heading is not None:
        heading = heading % 360.0
    sent = obj.get("sent_at")
    return Fix(driver_id, seq, ts, lat, lng, acc, speed, heading, now, source,
               published_at=float(sent) if isinstance(sent, int | float) and not isinstance(sent, bool) else None)


def parse(raw: bytes | str | Any, *, driver_id: int, now: float, limits: Limits, source: int = 0) -> list[Fix | Rejected]:
    """Stateless checks of one message (a ping or a list of pings); one result per ping, in order."""
    if isinstance(raw, bytes | bytearray | memoryview | str):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = _lenient(raw)  # NaN / Infinity literals (what many device JSON encoders write): refused as "nan"
        if obj is _BAD:
            text = bytes(raw)[:RAW_KEEP_BYTES].decode("utf-8", "replace") if not isinstance(raw, str) else raw[:RAW_KEEP_BYTES]
            return [Rejected(driver_id, Reason.SCHEMA, raw=text, received_at=now, source=source)]
    else:
        obj = raw
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        return [Rejected(driver_id, Reason.SCHEMA, raw="[]", received_at=now, source=source)]
    out: list[Fix | Rejected] = []
    for item in items:
        try:
            out.append(_one(item, driver_id=driver_id, now=now, limits=limits, source=source))
        except _Refuse as r:
            seq = item.get("seq") if isinstance(item, dict) else None
            seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63 else None
            try:
                ts = parse_ts(item.get("ts")) if isinstance(item, dict) else None
                ts = ts if ts is not None and abs(ts) < 1e11 else None
            except _Refuse:
                ts = None
            out.append(Rejected(driver_id, r.reason, seq=seq, ts=ts, raw=_raw(item), received_at=now, source=source))
    return out


_BAD = object()


def _lenient(raw: bytes | bytearray | memoryview | str) -> Any:
    try:
        return json.loads(bytes(raw) if not isinstance(raw, str) else raw)
    except (ValueError, UnicodeDecodeError):
        return _BAD


def _raw(item: Any) -> str:
    try:
        return orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY).decode()[:RAW_KEEP_BYTES]
    except TypeError:
        return repr(item)[:RAW_KEEP_BYTES]


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(slots=True)
class Last:
    """The newest accepted fix of a driver (event time), as the motion check needs it."""

    ts: float
    lat: float
    lng: float
    accuracy_m: float | None = None
    seq: int | None = None


def implied_speed_mps(a: Last | Fix, b: Last | Fix) -> float:
    """Speed needed to get from a to b, after allowing each fix its reported accuracy (GPS noise is not motion)."""
    dist = haversine_m(a.lat, a.lng, b.lat, b.lng)
    slack = (a.accuracy_m or 0.0) + (b.accuracy_m or 0.0)
    excess = max(0.0, dist - slack)
    if excess == 0.0:
        return 0.0
    return excess / max(abs(b.ts - a.ts), 1e-3)


def check_motion(fixes: Iterable[Fix], last: dict[int, Last], *, limits: Limits) -> tuple[list[Fix], list[Rejected]]:
    """Batch-level checks: duplicates inside the batch, teleports, lateness. Updates `last` in place.

    Fixes are taken per driver in event-time order. A fix is compared with the newest accepted
    fix before it (from `last`, the driver's live state, or an earlier fix of this batch); a
    fix older than that newest one is compared with it too (|dt|), which bounds the same
    impossibility, and is marked `late`: it goes to history but fires nothing.
    """
    accepted: list[Fix] = []
    rejected: list[Rejected] = []
    seen: set[tuple[int, int]] = set()
    for f in sorted(fixes, key=lambda f: (f.driver_id, f.ts, f.seq)):
        key = (f.driver_id, f.seq)
        if key in seen:
            rejected.append(Rejected(f.driver_id, Reason.DUPLICATE, f.seq, f.ts, "", f.received_at, f.source))
            continue
        seen.add(key)
        prev = last.get(f.driver_id)
        if prev is not None:
            if prev.seq == f.seq and prev.ts == f.ts:
                # The newest fix itself, re-delivered: history's key will call it a duplicate.
                f.late = True
                accepted.append(f)
                continue
            if implied_speed_mps(prev, f) > limits.max_speed_mps:
                rejected.append(Rejected(f.driver_id, Reason.TELEPORT, f.seq, f.ts, _raw(f.to_live()), f.received_at, f.source))
                continue
            if f.ts <= prev.ts:
                f.late = True
        if not f.late:
            last[f.driver_id] = Last(f.ts, f.lat, f.lng, f.accuracy_m, f.seq)
        accepted.append(f)
    return accepted, rejected
