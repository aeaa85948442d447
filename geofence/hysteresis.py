"""Per-driver geofence state machine: GPS fixes in, zone and stop events out, without flapping.

A DriverTracker takes one driver's fixes (ts_s, lat, lng, accuracy_m) in event time
and emits `zone.entered`, `zone.exited`, `zone.dwell`, `stop.arriving` and
`stop.arrived`. GPS drift at an edge must not flap, so a state change needs evidence
beyond the fix's own error: the fix must be inside (or outside) by more than its
margin, max(min_margin_m, accuracy_factor * accuracy_m), measured as a signed
distance in metres, and that must hold for `confirm_fixes` consecutive fixes
spanning at least `confirm_s` seconds; any fix that is not such evidence restarts
the count. Counting consecutive fixes alone was rejected: with independent 15 m
noise a parked driver is "inside by more than 15 m" on ~7 % of fixes, so two in a
row happen every few hundred fixes; requiring the evidence to last 10 s and 3 fixes
makes it vanishingly rare, at the price of reporting a real entry ~10 s late (its
event `ts_s` is still the first fix of the evidence, so event time stays right).
A zone change also needs the driver to have moved within `motion_window_s` of it
(two moving fixes in a row): a parked receiver's drift is correlated over tens of
seconds and can outlast any confirmation window. Moving means a reported (Doppler)
speed of `moving_speed_mps` or more, or without speed, a median position of the last
few seconds `position_motion_m` away from the one `motion_window_s` earlier. A fix implying more than
`max_speed_mps` from the last accepted fix is an outlier (the 200 m jumps of urban
canyons) and is dropped, unless several in a row agree,
which means the driver really moved (after a tunnel, say). A pass through a zone
between fixes is caught by testing the segment from the last fix that was clearly
outside to the current one (see crossing.py); it too must go deeper than the
margin. Fixes older than (or as old as) the last processed one are ignored and the
result says so: a late fix must not fire events backwards.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from geofence.crossing import segment_crossing, segment_length_m
from geofence.zones import ZoneIndex

_M_PER_DEG_LAT = 111_320.0
_MEDIAN_SPAN_S = 5.0  # fixes within this many seconds make one robust position

ZONE_ENTERED = "zone.entered"
ZONE_EXITED = "zone.exited"
ZONE_DWELL = "zone.dwell"
STOP_ARRIVING = "stop.arriving"
STOP_ARRIVED = "stop.arrived"


def _median(values: list[float]) -> float:
    """Median of a handful of numbers (np.median costs ~30 µs of overhead per call)."""
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of the state machine; the defaults suit phone GPS in a city."""

    accuracy_factor: float = 1.0  # margin = max(min_margin_m, accuracy_factor * accuracy_m)
    min_margin_m: float = 5.0  # even a fix claiming 1 m accuracy must clear the edge by this
    default_accuracy_m: float = 20.0  # used when a fix has no (or a non-positive) accuracy
    confirm_fixes: int = 3  # consecutive fixes of evidence for a state change ...
    confirm_s: float = 10.0  # ... spanning at least this long
    moving_speed_mps: float = 1.0  # a fix reporting less is "not moving" (Doppler speed) ...
    motion_window_s: float = 30.0  # ... and a zone change needs a moving fix this close to it
    # Without speed: moving when the median position of the last few seconds is this far
    # from the one motion_window_s earlier (a parked receiver's drift rarely spans it).
    position_motion_m: float = 50.0
    dwell_s: float = 300.0  # zone.dwell fires once per visit after this long inside
    max_speed_mps: float = 55.0  # ~200 km/h: a fix implying more is a GPS jump
    max_outliers_in_row: int = 3  # then the driver really moved: accept and re-anchor
    crossing_step_m: float = 5.0  # sampling step of the segment test
    max_crossing_gap_s: float = 300.0  # no straight-line inference across longer gaps
    arriving_distance_m: float = 500.0  # stop.arriving within this distance ...
    arriving_eta_s: float = 120.0  # ... or when the caller's ETA drops below this
    arrived_radius_m: float = 50.0  # stop.arrived once inside this radius by the margin


@dataclass(frozen=True)
class GeofenceEvent:
    """Something that happened to a driver; ts_s is event time, detected_ts_s the confirming fix."""

    kind: str  # one of zone.entered, zone.exited, zone.dwell, stop.arriving, stop.arrived
    ts_s: float
    detected_ts_s: float
    driver_id: str | None = None
    zone_id: str | None = None
    stop_id: str | None = None
    inferred: bool = False  # True when found on the segment between fixes, not at a fix
    distance_m: float | None = None  # signed distance to the zone edge / distance to the stop


@dataclass(frozen=True)
class FixResult:
    """What one fix did: the events it fired, or why it was ignored."""

    accepted: bool
    events: list[GeofenceEvent] = field(default_factory=list)
    reason: str | None = None  # "late", "duplicate", "invalid", "outlier_speed" when ignored


@dataclass(frozen=True)
class Stop:
    """The driver's next stop: a point, its arrival radius, and an optional arriving distance."""

    stop_id: str
    lat_deg: float
    lng_deg: float
    arrived_radius_m: float | None = None  # default: TrackerConfig.arrived_radius_m


@dataclass
class _Fix:
    ts_s: float
    lat_deg: float
    lng_deg: float
    accuracy_m: float
    speed_mps: float | None = None


@dataclass
class _Run:
    """Consecutive evidence for a state change."""

    count: int = 0
    start_ts_s: float = 0.0

    def push(self, ts_s: float) -> None:
        if self.count == 0:
            self.start_ts_s = ts_s
        self.count += 1

    def reset(self) -> None:
        self.count = 0


@dataclass
class _ZoneState:
    inside: bool = False
    run: _Run = field(default_factory=_Run)
    entered_ts_s: float = 0.0
    dwell_fired: bool = False
    anchor: _Fix | None = None  # last fix clearly outside (for the segment test)
    anchor_d_m: float | None = None  # its signed distance, when known


class DriverTracker:
    """The geofence state of one driver, fed with fixes in event-time order."""

    def __init__(self, *, index: ZoneIndex, config: TrackerConfig | None = None,
                 driver_id: str | None = None):
        self.index = index
        self.config = config or TrackerConfig()
        self.driver_id = driver_id
        self.last_ts_s: float | None = None
        self._last: _Fix | None = None  # last accepted fix
        self._outliers_in_row = 0
        self._zones: dict[str, _ZoneState] = {}
        self._evaluated_prev: set[str] = set()
        self._stop: Stop | None = None
        self._last_moving_ts_s: float | None = None
        self._last_fast = True  # no previous fix: let the first fast fix count
        self._recent: deque[tuple[float, float, float]] = deque()  # (ts_s, lat, lng) of accepted fixes
        self._stop_run = _Run()
        self._stop_arriving = False
        self._stop_arrived = False
        self._bounds_ids: tuple[str, ...] = ()
        self._bounds_version = -1
        self._bounds = np.empty((0, 4))

    # -- public -----------------------------------------------------------------------

    def set_next_stop(self, stop: Stop | None) -> None:
        """Track arrival at this stop (None: no stop). Resets the stop's arriving/arrived flags."""
        self._stop = stop
        self._stop_run = _Run()
        self._stop_arriving = False
        self._stop_arrived = False

    def inside_zones(self) -> list[str]:
        """Zones the driver is confirmed inside, sorted."""
        return sorted(z for z, s in self._zones.items() if s.inside)

    def update(self, *, ts_s: float, lat_deg: float, lng_deg: float, accuracy_m: float | None,
               speed_mps: float | None = None, eta_s: float | None = None) -> FixResult:
        """Process one fix; speed_mps is the receiver's (Doppler) speed, eta_s the caller's ETA to the next stop.

        Both are optional. With speed_mps, a driver who is not moving cannot enter or
        leave a zone however the position drifts (see motion_window_s).
        """
        if self.last_ts_s is not None and ts_s <= self.last_ts_s:
            # Out of order: the state already reflects later fixes; replaying this one
            # would fire events backwards in time.
            return FixResult(accepted=False, reason="late" if ts_s < self.last_ts_s else "duplicate")
        if not (math.isfinite(ts_s) and math.isfinite(lat_deg) and math.isfinite(lng_deg)
                and -90.0 <= lat_deg <= 90.0 and -180.0 <= lng_deg <= 180.0):
            return FixResult(accepted=False, reason="invalid")
        self.last_ts_s = ts_s
        cfg = self.config
        acc = accuracy_m if accuracy_m is not None and accuracy_m > 0 and math.isfinite(accuracy_m) \
            else cfg.default_accuracy_m
        speed = speed_mps if speed_mps is not None and math.isfinite(speed_mps) else None
        fix = _Fix(ts_s, lat_deg, lng_deg, acc, speed)
        prev = self._last
        crossing_ok = True
        if prev is not None:
            dist_m = segment_length_m(lat1_deg=prev.lat_deg, lng1_deg=prev.lng_deg,
                                      lat2_deg=lat_deg, lng2_deg=lng_deg)
            # Allow the two fixes' own errors on top of the speed limit.
            if dist_m - prev.accuracy_m - acc > cfg.max_speed_mps * (ts_s - prev.ts_s):
                self._outliers_in_row += 1
                if self._outliers_in_row < cfg.max_outliers_in_row:
                    return FixResult(accepted=False, reason="outlier_speed")
                crossing_ok = False  # re-anchoring: the straight path is unknown
            if ts_s - prev.ts_s > cfg.max_crossing_gap_s:
                crossing_ok = False
        self._outliers_in_row = 0
        self._last = fix
        self._recent.append((ts_s, lat_deg, lng_deg))
        horizon = ts_s - self.config.motion_window_s - 2 * _MEDIAN_SPAN_S
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        fast = self._fast(fix)
        if fast and self._last_fast:
            # Two fast fixes in a row: one Doppler outlier (a still phone reports
            # >= 1 m/s about once in a thousand fixes) must not count as motion.
            self._last_moving_ts_s = ts_s
        self._last_fast = fast
        events = self._update_zones(fix=fix, prev=prev, crossing_ok=crossing_ok)
        events += self._update_stop(fix=fix, eta_s=eta_s)
        if self.driver_id is not None:
            events = [replace(e, driver_id=self.driver_id) for e in events]
        events.sort(key=lambda e: e.ts_s)
        return FixResult(accepted=True, events=events)

    # -- snapshots --------------------------------------------------------------------

    def to_state(self) -> dict:
        """A JSON-able snapshot, so another process (ingest replica) can carry on this driver."""

        def fix(f: _Fix | None):
            return None if f is None else [f.ts_s, f.lat_deg, f.lng_deg, f.accuracy_m, f.speed_mps]

        return {
            "v": 1,
            "driver_id": self.driver_id,
            "last_ts_s": self.last_ts_s,
            "last": fix(self._last),
            "outliers_in_row": self._outliers_in_row,
            "last_moving_ts_s": self._last_moving_ts_s,
            "last_fast": self._last_fast,
            "recent": [list(r) for r in self._recent],
            "evaluated_prev": sorted(self._evaluated_prev),
            "zones": {z: {"inside": s.inside, "run": [s.run.count, s.run.start_ts_s],
                          "entered_ts_s": s.entered_ts_s, "dwell_fired": s.dwell_fired,
                          "anchor": fix(s.anchor), "anchor_d_m": s.anchor_d_m}
                      for z, s in self._zones.items()},
            "stop": None if self._stop is None else [self._stop.stop_id, self._stop.lat_deg,
                                                     self._stop.lng_deg, self._stop.arrived_radius_m],
            "stop_run": [self._stop_run.count, self._stop_run.start_ts_s],
            "stop_arriving": self._stop_arriving,
            "stop_arrived": self._stop_arrived,
        }

    @classmethod
    def from_state(cls, state: dict, *, index: ZoneIndex,
                   config: TrackerConfig | None = None) -> DriverTracker:
        """The tracker a `to_state()` snapshot describes; zones no longer in the index are dropped."""
        if state.get("v") != 1:
            raise ValueError(f"unknown tracker snapshot version {state.get('v')!r}")

        def fix(v):
            return None if v is None else _Fix(*v)

        t = cls(index=index, config=config, driver_id=state.get("driver_id"))
        t.last_ts_s = state["last_ts_s"]
        t._last = fix(state["last"])
        t._outliers_in_row = state["outliers_in_row"]
        t._last_moving_ts_s = state.get("last_moving_ts_s")
        t._last_fast = state.get("last_fast", True)
        t._recent = deque(tuple(r) for r in state.get("recent", []))
        t._evaluated_prev = set(state["evaluated_prev"])
        for z, s in state["zones"].items():
            if z in index:
                t._zones[z] = _ZoneState(inside=s["inside"], run=_Run(*s["run"]),
                                         entered_ts_s=s["entered_ts_s"],
                                         dwell_fired=s["dwell_fired"], anchor=fix(s["anchor"]),
                                         anchor_d_m=s.get("anchor_d_m"))
        if state["stop"] is not None:
            t._stop = Stop(*state["stop"])
        t._stop_run = _Run(*state["stop_run"])
        t._stop_arriving = state["stop_arriving"]
        t._stop_arrived = state["stop_arrived"]
        return t

    # -- zones ------------------------------------------------------------------------

    def _fast(self, fix: _Fix) -> bool:
        """Reported moving; without speed, moving by position (or not known to be still)."""
        if fix.speed_mps is not None:
            return fix.speed_mps >= self.config.moving_speed_mps
        now = [(la, ln) for t, la, ln in self._recent if t > fix.ts_s - _MEDIAN_SPAN_S]
        then_end = fix.ts_s - self.config.motion_window_s
        then = [(la, ln) for t, la, ln in self._recent if then_end - _MEDIAN_SPAN_S < t <= then_end]
        if not then or not now:
            return True  # not enough history to tell: do not block
        # Medians, not means: one 200 m jump among five fixes must not look like motion.
        moved_m = segment_length_m(lat1_deg=_median([p[0] for p in then]),
                                   lng1_deg=_median([p[1] for p in then]),
                                   lat2_deg=_median([p[0] for p in now]),
                                   lng2_deg=_median([p[1] for p in now]))
        return moved_m >= self.config.position_motion_m

    def _moved_near(self, ts_s: float) -> bool:
        """Was there a moving fix since motion_window_s before ts_s?

        Position drift of a parked receiver is correlated over tens of seconds and can
        hold a fix past an edge by more than its accuracy for longer than confirm_s;
        its Doppler speed stays near zero. Requiring motion around a zone change is
        what makes a parked driver immune to drift of any duration.
        """
        last = self._last_moving_ts_s
        return last is not None and last >= ts_s - self.config.motion_window_s

    def _margin_m(self, accuracy_m: float) -> float:
        return max(self.config.min_margin_m, self.config.accuracy_factor * accuracy_m)

    def _candidates(self, fix: _Fix, prev: _Fix | None) -> list[str]:
        if self._bounds_version != self.index.version:
            self._bounds_ids, self._bounds = self.index.bounds_array()
            self._bounds_version = self.index.version
        lats = [fix.lat_deg] + ([prev.lat_deg] if prev else [])
        lngs = [fix.lng_deg] + ([prev.lng_deg] if prev else [])
        # Grow the segment's box by the margin so "clearly outside" is decided by a
        # real distance for every zone near enough to matter.
        pad_m = self._margin_m(fix.accuracy_m) + 1.0
        pad_lat = pad_m / _M_PER_DEG_LAT
        pad_lng = pad_m / (_M_PER_DEG_LAT * max(0.01, math.cos(math.radians(fix.lat_deg))))
        b = self._bounds
        hit = ((b[:, 0] <= max(lngs) + pad_lng) & (b[:, 2] >= min(lngs) - pad_lng)
               & (b[:, 1] <= max(lats) + pad_lat) & (b[:, 3] >= min(lats) - pad_lat))
        cands = {self._bounds_ids[i] for i in np.flatnonzero(hit)}
        cands.update(z for z, s in self._zones.items() if s.inside or s.run.count)
        return sorted(z for z in cands if z in self.index)

    def _update_zones(self, *, fix: _Fix, prev: _Fix | None, crossing_ok: bool) -> list[GeofenceEvent]:
        cfg = self.config
        events: list[GeofenceEvent] = []
        margin = self._margin_m(fix.accuracy_m)
        evaluated = set()
        # A zone removed from the index is forgotten without an exit event: it no
        # longer exists, so there is nothing to have left.
        for zone_id in [z for z in self._zones if z not in self.index]:
            del self._zones[zone_id]
        for zone_id in self._candidates(fix, prev):
            evaluated.add(zone_id)
            st = self._zones.setdefault(zone_id, _ZoneState())
            if zone_id not in self._evaluated_prev:
                # Not a candidate at the previous fix: that fix was clearly outside.
                st.anchor = prev
                st.anchor_d_m = None
            d = float(self.index.signed_distance_m(zone_id=zone_id, lat_deg=fix.lat_deg,
                                                   lng_deg=fix.lng_deg)[0])
            if st.inside:
                if d > margin:
                    st.run.push(fix.ts_s)
                else:
                    st.run.reset()
                if (st.run.count >= cfg.confirm_fixes and fix.ts_s - st.run.start_ts_s >= cfg.confirm_s
                        and self._moved_near(st.run.start_ts_s)):
                    st.inside = False
                    exited_ts_s = st.run.start_ts_s
                    st.run.reset()
                    st.anchor = fix
                    st.anchor_d_m = d
                    events.append(GeofenceEvent(kind=ZONE_EXITED, ts_s=exited_ts_s,
                                                detected_ts_s=fix.ts_s, zone_id=zone_id, distance_m=d))
                elif not st.dwell_fired and fix.ts_s - st.entered_ts_s >= cfg.dwell_s:
                    st.dwell_fired = True
                    events.append(GeofenceEvent(kind=ZONE_DWELL, ts_s=st.entered_ts_s + cfg.dwell_s,
                                                detected_ts_s=fix.ts_s, zone_id=zone_id, distance_m=d))
                continue
            if d < -margin:
                st.run.push(fix.ts_s)
                if (st.run.count >= cfg.confirm_fixes and fix.ts_s - st.run.start_ts_s >= cfg.confirm_s
                        and self._moved_near(st.run.start_ts_s)):
                    st.inside = True
                    st.entered_ts_s = st.run.start_ts_s
                    st.dwell_fired = False
                    st.run.reset()
                    st.anchor = None
                    events.append(GeofenceEvent(kind=ZONE_ENTERED, ts_s=st.entered_ts_s,
                                                detected_ts_s=fix.ts_s, zone_id=zone_id, distance_m=d))
                continue
            st.run.reset()
            if d > margin:
                if (crossing_ok and st.anchor is not None
                        and fix.ts_s - st.anchor.ts_s <= cfg.max_crossing_gap_s
                        and self._moved_near(st.anchor.ts_s)):
                    events += self._crossing_events(zone_id=zone_id, start=st.anchor, end=fix,
                                                    start_d_m=st.anchor_d_m, end_d_m=d)
                st.anchor = fix
                st.anchor_d_m = d
            elif not crossing_ok:
                st.anchor = None
        self._evaluated_prev = evaluated
        # Forget idle state so a long shift does not accumulate every zone it passed.
        for zone_id in [z for z, s in self._zones.items()
                        if z not in evaluated and not s.inside and not s.run.count]:
            del self._zones[zone_id]
        return events

    def _crossing_events(self, *, zone_id: str, start: _Fix, end: _Fix, start_d_m: float | None,
                         end_d_m: float) -> list[GeofenceEvent]:
        cfg = self.config
        margin = max(self._margin_m(start.accuracy_m), self._margin_m(end.accuracy_m))
        if start_d_m is not None:
            # Signed distance is 1-Lipschitz, so along a segment of length L from a point
            # d1 outside to one d2 outside it stays >= (d1 + d2 - L) / 2: skip the
            # sampling when that cannot go deeper than the margin (the usual case).
            length_m = segment_length_m(lat1_deg=start.lat_deg, lng1_deg=start.lng_deg,
                                        lat2_deg=end.lat_deg, lng2_deg=end.lng_deg)
            if (start_d_m + end_d_m - length_m) / 2.0 >= -margin:
                return []
        crossing = segment_crossing(self.index, zone_id=zone_id, lat1_deg=start.lat_deg,
                                    lng1_deg=start.lng_deg, lat2_deg=end.lat_deg,
                                    lng2_deg=end.lng_deg, step_m=cfg.crossing_step_m)
        if crossing is None or crossing.depth_m <= margin:
            return []
        span = end.ts_s - start.ts_s
        return [
            GeofenceEvent(kind=ZONE_ENTERED, ts_s=start.ts_s + crossing.entry_fraction * span,
                          detected_ts_s=end.ts_s, zone_id=zone_id, inferred=True,
                          distance_m=-crossing.depth_m),
            GeofenceEvent(kind=ZONE_EXITED, ts_s=start.ts_s + crossing.exit_fraction * span,
                          detected_ts_s=end.ts_s, zone_id=zone_id, inferred=True,
                          distance_m=-crossing.depth_m),
        ]

    # -- stops ------------------------------------------------------------------------

    def _update_stop(self, *, fix: _Fix, eta_s: float | None) -> list[GeofenceEvent]:
        stop = self._stop
        if stop is None or self._stop_arrived:
            return []
        cfg = self.config
        events: list[GeofenceEvent] = []
        dist_m = segment_length_m(lat1_deg=fix.lat_deg, lng1_deg=fix.lng_deg,
                                  lat2_deg=stop.lat_deg, lng2_deg=stop.lng_deg)
        if not self._stop_arriving and (dist_m <= cfg.arriving_distance_m
                                        or (eta_s is not None and eta_s <= cfg.arriving_eta_s)):
            self._stop_arriving = True
            events.append(GeofenceEvent(kind=STOP_ARRIVING, ts_s=fix.ts_s, detected_ts_s=fix.ts_s,
                                        stop_id=stop.stop_id, distance_m=dist_m))
        radius = stop.arrived_radius_m if stop.arrived_radius_m is not None else cfg.arrived_radius_m
        if dist_m + self._margin_m(fix.accuracy_m) <= radius:
            self._stop_run.push(fix.ts_s)
        else:
            self._stop_run.reset()
        if self._stop_run.count >= cfg.confirm_fixes and fix.ts_s - self._stop_run.start_ts_s >= cfg.confirm_s:
            self._stop_arrived = True
            events.append(GeofenceEvent(kind=STOP_ARRIVED, ts_s=self._stop_run.start_ts_s,
                                        detected_ts_s=fix.ts_s, stop_id=stop.stop_id,
                                        distance_m=dist_m))
        return events
