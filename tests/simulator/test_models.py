"""The simulator's models without a server: phones, driving, traffic, durations, the grade's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from serena.commands.simulate import parse_duration
from simulator import traffic
from simulator.city import City, haversine_m
from simulator.gps import Phone, PhoneModel


def test_durations_read_like_people_write_them():
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    with pytest.raises(Exception):
        parse_duration("two hours")


def test_a_perfect_phone_reports_the_truth_and_a_noisy_one_about_8_m_off():
    perfect = Phone(PhoneModel.perfect(), np.random.default_rng(1))
    f = perfect.observe(1000.0, 60.17, 24.94, 10.0, 90.0, moving=True)
    assert len(f) == 1 and (f[0].lat, f[0].lng, f[0].ts) == (60.17, 24.94, 1000.0)
    noisy = Phone(PhoneModel(noise_m=8.0, multipath_p=0, tunnel_p=0, duplicate_p=0, reorder_p=0), np.random.default_rng(2))
    errs = [float(haversine_m(60.17, 24.94, x.lat, x.lng)) for i in range(2000)
            for x in noisy.observe(1000.0 + i, 60.17, 24.94, 0, 0, moving=False)]
    assert 8 < np.median(errs) < 12  # Rayleigh median of σ=8 per axis is 9.4 m


def test_a_tunnel_holds_fixes_back_and_releases_them_as_one_burst_in_order():
    phone = Phone(PhoneModel(noise_m=0, multipath_p=0, tunnel_p=1.0, tunnel_s=(5.0, 5.0), duplicate_p=0, reorder_p=0, skew_s=0),
                  np.random.default_rng(3))
    sent = [phone.observe(100.0, 60.17, 24.94, 10, 0, moving=True)]
    phone.model.tunnel_p = 0.0  # one tunnel only
    sent += [phone.observe(101.0 + i, 60.17, 24.94, 10, 0, moving=True) for i in range(7)]
    assert sent[0] == [] and any(len(s) > 1 for s in sent)
    burst = next(s for s in sent if len(s) > 1)
    assert [f.seq for f in burst] == sorted(f.seq for f in burst)


def test_same_seed_same_phone_noise():
    a = Phone(PhoneModel(), np.random.default_rng([42, 3, 0]))
    b = Phone(PhoneModel(), np.random.default_rng([42, 3, 0]))
    fa = [x.lat for i in range(300) for x in a.observe(i, 60.17, 24.94, 10, 0, moving=True)]
    fb = [x.lat for i in range(300) for x in b.observe(i, 60.17, 24.94, 10, 0, moving=True)]
    assert fa == fb


def test_a_van_drives_the_graph_with_increasing_times_and_rush_hour_is_slower():
    city = City.load("default")
    a, b = city.sample_addresses(2, np.random.default_rng(5))
    noon = city.drive(a, b, hour=13.0, driver_factor=1.0, rng=np.random.default_rng(6))
    rush = city.drive(a, b, hour=8.0, driver_factor=1.0, rng=np.random.default_rng(6))
    assert np.all(np.diff(noon.t_s) >= 0) and noon.distance_m > 0
    assert rush.duration_s > noon.duration_s and rush.distance_m == pytest.approx(noon.distance_m)
    lat, lng, *_ = noon.at(noon.duration_s + 10)
    assert (lat, lng) == (b[0], b[1])
    assert traffic.congestion(8.0) > 0.9 and traffic.congestion(3.0) < 0.05


def test_a_phone_numbers_its_fixes_like_the_driver_app_so_a_rerun_with_saved_accounts_is_not_a_duplicate():
    wall = 1_795_600_000.0
    first = Phone(PhoneModel.perfect(), np.random.default_rng(1))
    seqs = [f.seq for t in range(5) for f in first.observe(wall + t, 60.17, 24.94, 8.0, 90.0, moving=True)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[0] == int(wall * 1000)  # max(last + 1, wall-clock ms)
    # The same driver's phone in a later run (saved accounts) starts above everything it sent before.
    again = Phone(PhoneModel.perfect(), np.random.default_rng(1))
    later = again.observe(wall + 60, 60.17, 24.94, 8.0, 90.0, moving=True)
    assert later[0].seq > max(seqs)
