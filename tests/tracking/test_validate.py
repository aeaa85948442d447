"""Every refused fix has its reason; motion checks work in event time."""

from __future__ import annotations

import math

import pytest

from tracking.validate import Fix, Last, Limits, Reason, Rejected, check_motion, parse

NOW = 1_800_000_000.0
LIM = Limits(max_accuracy_m=100, future_skew_s=30, max_age_s=3600, max_speed_mps=70)


def one(payload, driver_id: int = 7):
    [r] = parse(payload, driver_id=driver_id, now=NOW, limits=LIM)
    return r


def good(**kw):
    return {"seq": 1, "ts": NOW - 1, "lat": 60.17, "lng": 24.94, "accuracy_m": 5, "speed_mps": 3, "heading_deg": 370, **kw}


def test_a_good_ping_is_accepted_with_heading_normalised():
    f = one(good())
    assert isinstance(f, Fix) and f.driver_id == 7 and f.seq == 1 and f.heading_deg == 10


def test_iso_timestamps_with_offset_are_accepted():
    f = one(good(ts="2027-01-15T07:59:50Z"))  # NOW is 2027-01-15T08:00:00Z
    assert isinstance(f, Fix) and f.ts == NOW - 10
    assert one(good(ts="2027-01-15T09:59:50+02:00")).ts == NOW - 10


@pytest.mark.parametrize(("payload", "reason"), [
    (b"not json", Reason.SCHEMA),
    (b"[]", Reason.SCHEMA),
    (b'"a string"', Reason.SCHEMA),
    (good(seq=None), Reason.SCHEMA),
    (good(seq=-1), Reason.SCHEMA),
    (good(seq=True), Reason.SCHEMA),
    (good(lat="60.1"), Reason.SCHEMA),
    (good(ts="yesterday"), Reason.SCHEMA),
    (good(ts="2027-01-15T08:00:00"), Reason.SCHEMA),  # no offset: ambiguous
    ({k: v for k, v in good().items() if k != "lng"}, Reason.SCHEMA),
    (good(lat=math.nan), Reason.NAN),
    (good(lng=math.inf), Reason.NAN),
    (good(accuracy_m=math.nan), Reason.NAN),
    (good(lat=90.0001), Reason.LAT_RANGE),
    (good(lat=-91), Reason.LAT_RANGE),
    (good(lng=180.5), Reason.LNG_RANGE),
    (good(accuracy_m=101), Reason.ACCURACY),
    (good(accuracy_m=-1), Reason.ACCURACY),
    (good(ts=NOW + 31), Reason.FUTURE),
    (good(ts=NOW - 3601), Reason.TOO_OLD),
    (good(driver_id=8), Reason.DRIVER_MISMATCH),
])
def test_each_bad_ping_is_refused_with_its_reason(payload, reason):
    r = one(payload)
    assert isinstance(r, Rejected) and r.reason == reason and r.driver_id == 7


def test_nan_in_raw_json_text_is_refused_as_nan():
    assert one(b'{"seq":1,"ts":1799999999,"lat":NaN,"lng":1}').reason == Reason.NAN


def test_clock_skew_within_the_allowance_is_accepted():
    assert isinstance(one(good(ts=NOW + 29)), Fix)


def test_a_list_message_gives_one_result_per_ping_keeping_the_seq_of_refused_ones():
    out = parse([good(seq=1), good(seq=2, lat=95), good(seq=3)], driver_id=7, now=NOW, limits=LIM)
    assert [type(r).__name__ for r in out] == ["Fix", "Rejected", "Fix"]
    assert out[1].seq == 2 and out[1].reason == Reason.LAT_RANGE and '"lat":95' in out[1].raw


def fix(seq, ts, lat=60.17, lng=24.94, acc=5.0, driver_id=7):
    return Fix(driver_id, seq, ts, lat, lng, acc, None, None, NOW)


def test_a_teleport_is_refused_but_gps_noise_is_not():
    last = {7: Last(NOW - 10, 60.17, 24.94, 5.0, 1)}
    ok, bad = check_motion([fix(2, NOW - 9, lat=60.1703), fix(3, NOW - 8, lat=60.30)], last, limits=LIM)
    assert [f.seq for f in ok] == [2] and [(r.seq, r.reason) for r in bad] == [(3, Reason.TELEPORT)]
    # 30 m of jitter in the same second with 20 m accuracy each is noise, not 30 m/s of motion.
    ok, bad = check_motion([fix(4, NOW - 8.5, lat=60.17057, acc=20)], {7: Last(NOW - 9, 60.1703, 24.94, 20.0, 2)}, limits=LIM)
    assert [f.seq for f in ok] == [4] and not bad


def test_after_a_refused_teleport_the_next_fix_is_compared_with_the_last_accepted_one():
    last = {7: Last(NOW - 10, 60.17, 24.94, 5.0, 1)}
    ok, bad = check_motion([fix(2, NOW - 9, lat=61.0), fix(3, NOW - 8, lat=60.1702)], last, limits=LIM)
    assert [f.seq for f in ok] == [3] and [r.seq for r in bad] == [2]


def test_duplicates_inside_a_batch_are_refused_and_out_of_order_fixes_are_taken_in_event_time():
    last: dict = {}
    ok, bad = check_motion([fix(3, NOW - 1), fix(1, NOW - 3), fix(2, NOW - 2), fix(2, NOW - 2)], last, limits=LIM)
    assert [f.seq for f in ok] == [1, 2, 3] and not any(f.late for f in ok)
    assert [(r.seq, r.reason) for r in bad] == [(2, Reason.DUPLICATE)]
    assert last[7].seq == 3


def test_a_fix_older_than_the_newest_is_late():
    last = {7: Last(NOW - 1, 60.17, 24.94, 5.0, 10)}
    ok, bad = check_motion([fix(5, NOW - 20)], last, limits=LIM)
    assert ok[0].late and not bad and last[7].seq == 10
