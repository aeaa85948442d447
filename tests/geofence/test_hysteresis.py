"""The per-driver state machine: no flapping at an edge, one event per real transition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geofence import (
    STOP_ARRIVED, STOP_ARRIVING, ZONE_DWELL, ZONE_ENTERED, ZONE_EXITED, DriverTracker, Stop,
    TrackerConfig, Zone, ZoneIndex, segment_crossing,
)

LAT0, LNG0 = 52.52, 13.40
M_PER_DEG = 111_320.0
KX = M_PER_DEG * math.cos(math.radians(LAT0))


def _at(x_m: float, y_m: float) -> tuple[float, float]:
    """lat, lng of a point x_m east and y_m north of the reference."""
    return LAT0 + y_m / M_PER_DEG, LNG0 + x_m / KX


@pytest.fixture(scope="module")
def index() -> ZoneIndex:
    # A 200 m circle centred on the reference, and a 20 m drop-off circle 1 km east.
    lat, lng = _at(1000.0, 0.0)
    return ZoneIndex([
        Zone.circle(zone_id="zone", lat_deg=LAT0, lng_deg=LNG0, radius_m=200.0),
        Zone.circle(zone_id="dropoff", lat_deg=lat, lng_deg=lng, radius_m=20.0),
    ])


def _feed(tracker: DriverTracker, track, *, accuracy_m: float = 10.0, dt_s: float = 1.0, t0_s: float = 0.0):
    events = []
    for i, (x, y) in enumerate(track):
        lat, lng = _at(x, y)
        events += tracker.update(ts_s=t0_s + i * dt_s, lat_deg=lat, lng_deg=lng, accuracy_m=accuracy_m).events
    return events


def test_drift_at_an_edge_does_not_flap(index):
    rng = np.random.default_rng(1)
    tracker = DriverTracker(index=index)
    # Parked on the circle's edge for an hour: 15 m noise (68 % radius), 1 % 200 m jumps.
    n = 3600
    ang = rng.uniform(0, 2 * np.pi, n)
    jumps = (rng.uniform(size=n) < 0.01) * 200.0
    track = [(200.0 + rng.normal(0, 10) + j * math.cos(a), rng.normal(0, 10) + j * math.sin(a))
             for a, j in zip(ang, jumps)]
    events = _feed(tracker, track, accuracy_m=15.0)
    assert [e for e in events if e.zone_id == "zone"] == []


def test_real_entry_and_exit_fire_exactly_once_each(index):
    tracker = DriverTracker(index=index)
    rng = np.random.default_rng(2)
    # Drive west to east through the 200 m circle at 5 m/s, with 5 m noise.
    track = [(x + rng.normal(0, 5), rng.normal(0, 5)) for x in np.arange(-600.0, 600.0, 5.0)]
    events = [e for e in _feed(tracker, track, accuracy_m=8.0) if e.zone_id == "zone"]
    assert [e.kind for e in events] == [ZONE_ENTERED, ZONE_EXITED]
    entered, exited = events
    # Event time is when the evidence began, not when it was confirmed.
    assert entered.ts_s < entered.detected_ts_s
    # x = -600 + 5 t crosses the edge (x = -200, +200) at t = 80 and t = 160.
    assert 80 <= entered.ts_s <= 90 and 160 <= exited.ts_s <= 170
    assert not entered.inferred


def test_dwell_fires_once_per_visit(index):
    tracker = DriverTracker(index=index, config=TrackerConfig(dwell_s=60.0))
    track = [(0.0, 0.0)] * 600  # ten minutes at the centre
    events = _feed(tracker, track)
    kinds = [e.kind for e in events if e.zone_id == "zone"]
    assert kinds == [ZONE_ENTERED, ZONE_DWELL]
    assert events[1].ts_s == pytest.approx(events[0].ts_s + 60.0)


def test_late_fixes_fire_nothing_and_say_so(index):
    tracker = DriverTracker(index=index)
    _feed(tracker, [(0.0, 0.0)] * 30)  # inside, entered, last ts 29
    lat, lng = _at(5000.0, 0.0)
    late = tracker.update(ts_s=10.0, lat_deg=lat, lng_deg=lng, accuracy_m=5.0)
    assert not late.accepted and late.reason == "late" and late.events == []
    dup = tracker.update(ts_s=29.0, lat_deg=lat, lng_deg=lng, accuracy_m=5.0)
    assert not dup.accepted and dup.reason == "duplicate"
    assert tracker.inside_zones() == ["zone"]


def test_segment_through_a_small_zone_with_both_fixes_outside_is_caught(index):
    tracker = DriverTracker(index=index)
    # 20 m/s, one fix every 5 s: fixes 50 m before and after the drop-off circle.
    track = [(850.0 + 100.0 * i, 0.0) for i in range(4)]  # 850, 950, 1050, 1150
    events = [e for e in _feed(tracker, track, accuracy_m=5.0, dt_s=5.0) if e.zone_id == "dropoff"]
    assert [e.kind for e in events] == [ZONE_ENTERED, ZONE_EXITED]
    assert all(e.inferred for e in events)
    assert 5.0 < events[0].ts_s < events[1].ts_s < 10.0


def test_segment_crossing_reports_depth(index):
    lat1, lng1 = _at(900.0, 0.0)
    lat2, lng2 = _at(1100.0, 0.0)
    c = segment_crossing(index, zone_id="dropoff", lat1_deg=lat1, lng1_deg=lng1, lat2_deg=lat2, lng2_deg=lng2)
    assert c is not None and c.depth_m == pytest.approx(20.0, abs=1.0)
    assert 0.4 < c.entry_fraction < 0.5 < c.exit_fraction < 0.6
    lat3, lng3 = _at(900.0, 100.0)
    lat4, lng4 = _at(1100.0, 100.0)
    assert segment_crossing(index, zone_id="dropoff", lat1_deg=lat3, lng1_deg=lng3,
                            lat2_deg=lat4, lng2_deg=lng4) is None


def test_a_jump_is_an_outlier_not_an_entry(index):
    tracker = DriverTracker(index=index)
    _feed(tracker, [(400.0, 0.0)] * 5)
    lat, lng = _at(0.0, 0.0)  # 400 m in one second
    r = tracker.update(ts_s=5.0, lat_deg=lat, lng_deg=lng, accuracy_m=10.0)
    assert not r.accepted and r.reason == "outlier_speed"


def test_stop_arriving_then_arrived_once(index):
    tracker = DriverTracker(index=index)
    lat, lng = _at(3000.0, 0.0)
    tracker.set_next_stop(Stop(stop_id="s1", lat_deg=lat, lng_deg=lng))
    track = [(x, 0.0) for x in np.arange(2000.0, 3000.0, 10.0)] + [(3000.0, 0.0)] * 60
    events = [e for e in _feed(tracker, track, accuracy_m=5.0) if e.stop_id == "s1"]
    assert [e.kind for e in events] == [STOP_ARRIVING, STOP_ARRIVED]
    assert events[0].distance_m <= 500.0


def test_stop_arriving_by_eta(index):
    tracker = DriverTracker(index=index)
    lat, lng = _at(9000.0, 0.0)
    tracker.set_next_stop(Stop(stop_id="s2", lat_deg=lat, lng_deg=lng))
    r = tracker.update(ts_s=0.0, lat_deg=LAT0, lng_deg=LNG0, accuracy_m=5.0, eta_s=90.0)
    assert [e.kind for e in r.events if e.stop_id] == [STOP_ARRIVING]


def test_snapshot_round_trip_carries_on_without_duplicate_events(index):
    import json

    track = [(x, 0.0) for x in np.arange(-600.0, 600.0, 5.0)]
    whole = _feed(DriverTracker(index=index), track, accuracy_m=8.0)
    first = DriverTracker(index=index)
    events = _feed(first, track[:100], accuracy_m=8.0)
    state = json.loads(json.dumps(first.to_state()))
    second = DriverTracker.from_state(state, index=index)
    events += _feed(second, track[100:], accuracy_m=8.0, t0_s=100.0)
    assert [(e.kind, e.ts_s) for e in events] == [(e.kind, e.ts_s) for e in whole]


def test_removing_a_zone_forgets_it_and_events_carry_the_driver(index):
    local = ZoneIndex([Zone.circle(zone_id="tmp", lat_deg=LAT0, lng_deg=LNG0, radius_m=200.0)])
    tracker = DriverTracker(index=local, driver_id="d-1")
    events = _feed(tracker, [(0.0, 0.0)] * 20)
    assert [(e.kind, e.driver_id) for e in events] == [(ZONE_ENTERED, "d-1")]
    local.remove("tmp")
    assert _feed(tracker, [(0.0, 0.0)] * 5, t0_s=100.0) == []
    assert tracker.inside_zones() == []


def test_random_traces_keep_the_event_grammar():
    """Per zone: entered, [dwell], exited, entered, ... in time order; refused fixes fire nothing."""
    rng = np.random.default_rng(7)
    zones = [Zone.circle(zone_id=f"z{k}", lat_deg=_at(x, y)[0], lng_deg=_at(x, y)[1], radius_m=r)
             for k, (x, y, r) in enumerate([(0, 0, 200), (150, 0, 60), (600, 300, 25), (-400, -200, 400)])]
    local = ZoneIndex(zones)
    for trial in range(6):
        tracker = DriverTracker(index=local, config=TrackerConfig(dwell_s=30.0))
        pos = np.array([-900.0, -900.0])
        t = 0.0
        last = {}
        for step in range(1500):
            pos += rng.normal(0, 6, 2) + (np.array([1.2, 1.2]) if step < 700 else -np.array([1.0, 0.8]))
            t += float(rng.choice([1.0, 1.0, 2.0, 5.0]))
            x, y = pos + rng.normal(0, 8, 2)
            if rng.uniform() < 0.02:
                x, y = x + 200.0, y - 150.0  # jump
            ts = t - 30.0 if rng.uniform() < 0.03 else t  # some late fixes
            lat, lng = _at(x, y)
            r = tracker.update(ts_s=ts, lat_deg=lat, lng_deg=lng, accuracy_m=12.0)
            if not r.accepted:
                assert r.events == [] and r.reason in ("late", "duplicate", "outlier_speed")
                continue
            for e in r.events:
                assert e.detected_ts_s == ts and e.ts_s <= e.detected_ts_s + 1e-9
                if e.zone_id is None:
                    continue
                prev_kind, prev_ts = last.get(e.zone_id, (ZONE_EXITED, -np.inf))
                allowed = {ZONE_EXITED: {ZONE_ENTERED}, ZONE_ENTERED: {ZONE_DWELL, ZONE_EXITED},
                           ZONE_DWELL: {ZONE_EXITED}}[prev_kind]
                assert e.kind in allowed, (trial, e, prev_kind)
                assert e.ts_s >= prev_ts - 1e-9
                last[e.zone_id] = (e.kind, e.ts_s)
        inside = sorted(z for z, (k, _) in last.items() if k in (ZONE_ENTERED, ZONE_DWELL))
        assert tracker.inside_zones() == inside


def _drift(rng, n: int, *, sigma_m: float, tau_s: float) -> np.ndarray:
    a = math.exp(-1.0 / tau_s)
    e = np.zeros((n, 2))
    e[0] = rng.normal(0, sigma_m, 2)
    for i in range(1, n):
        e[i] = a * e[i - 1] + math.sqrt(1 - a * a) * rng.normal(0, sigma_m, 2)
    return e


def test_slow_drift_of_a_parked_receiver_does_not_flap_when_speed_is_known(index):
    rng = np.random.default_rng(4)
    # Drift correlated over a minute holds a fix past the edge for tens of seconds;
    # the still phone's Doppler speed (|N(0, 0.3)| m/s) says it is not moving.
    e = _drift(rng, 3600, sigma_m=10.0, tau_s=60.0)
    tracker = DriverTracker(index=index)
    events = []
    for i in range(3600):
        lat, lng = _at(200.0 + e[i, 0], e[i, 1])
        events += tracker.update(ts_s=float(i), lat_deg=lat, lng_deg=lng, accuracy_m=15.0,
                                 speed_mps=abs(rng.normal(0, 0.3))).events
    assert [e for e in events if e.zone_id == "zone"] == []


def test_driving_in_and_parking_still_enters_when_speed_is_known(index):
    tracker = DriverTracker(index=index)
    events = []
    for i in range(200):
        x = min(-400.0 + 10.0 * i, 0.0)  # 10 m/s to the centre, then parked
        lat, lng = _at(x, 0.0)
        events += tracker.update(ts_s=float(i), lat_deg=lat, lng_deg=lng, accuracy_m=8.0,
                                 speed_mps=10.0 if x < 0.0 else 0.1).events
    assert [e.kind for e in events if e.zone_id == "zone"] == [ZONE_ENTERED]


def test_slow_drift_without_speed_is_held_by_the_position_motion_gate(index):
    rng = np.random.default_rng(4)
    e = _drift(rng, 3600, sigma_m=10.0, tau_s=60.0)

    def zone_events(config: TrackerConfig) -> list:
        tracker = DriverTracker(index=index, config=config)
        events = []
        for i in range(3600):
            lat, lng = _at(200.0 + e[i, 0], e[i, 1])
            events += tracker.update(ts_s=float(i), lat_deg=lat, lng_deg=lng, accuracy_m=15.0).events
        # The first motion_window_s have no history to judge motion by; after that,
        # a receiver whose median position stays put cannot change zones.
        return [ev for ev in events if ev.zone_id == "zone" and ev.ts_s >= 60.0]

    assert zone_events(TrackerConfig()) == []
    assert zone_events(TrackerConfig(position_motion_m=0.0)) != []  # the gate is what holds it
