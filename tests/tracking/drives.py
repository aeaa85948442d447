"""Simulated drives with ground truth for map matching (tests/tracking/test_matching.py, benchmarks/matching.py).

Fastest paths between random nodes of a real road graph, driven at 10 m/s with one fix a
second; each fix is the true position plus Gaussian noise per axis, a Doppler speed with
0.5 m/s error and a course over ground with Gaussian error. The truth is the directed
edge the car was on.
"""

from __future__ import annotations

import numpy as np

SPEED_MPS = 10.0
SPEED_NOISE_MPS = 0.5


def simulate(g, rng, n_routes: int, *, noise_m: float = 10.0, heading_noise_deg: float = 10.0, min_m: float = 1000.0):
    """Drives along fastest paths between random nodes at 10 m/s, one fix a second.

    Returns a list of (lat, lng, speed_mps, heading_deg, true_edge) arrays per drive: the
    noisy position, the Doppler speed and course over ground (with their noise), and the
    directed edge the car was on. Headings are drawn after positions so that the
    positions for a seed do not depend on `heading_noise_deg`.
    """
    from routing import paths
    from routing.graph import haversine_m

    traces = []
    while len(traces) < n_routes:
        a, b = rng.integers(0, g.n_nodes, 2)
        p = paths.route(g, (g.lat[a], g.lng[a]), (g.lat[b], g.lng[b]))
        if p.distance_m < min_m:
            continue
        lat, lng, edge, bearing = [], [], [], []
        carry = 0.0
        for e in p.edges[1:-1]:
            s, t = g.geom_indptr[e], g.geom_indptr[e + 1]
            la, ln = g.geom_lat[s:t], g.geom_lng[s:t]
            for i in range(len(la) - 1):
                seg = float(haversine_m(la[i], ln[i], la[i + 1], ln[i + 1]))
                b_deg = _bearing_deg(la[i], ln[i], la[i + 1], ln[i + 1])
                pos = carry
                while pos < seg:
                    f = pos / seg
                    lat.append(la[i] + f * (la[i + 1] - la[i]))
                    lng.append(ln[i] + f * (ln[i + 1] - ln[i]))
                    edge.append(e)
                    bearing.append(b_deg)
                    pos += SPEED_MPS
                carry = pos - seg
        if len(lat) < 30:
            continue
        lat, lng = np.array(lat), np.array(lng)
        ky = 111_195.0
        nlat = lat + rng.normal(0, noise_m, len(lat)) / ky
        nlng = lng + rng.normal(0, noise_m, len(lat)) / (ky * np.cos(np.radians(lat)))
        speed = SPEED_MPS + rng.normal(0, SPEED_NOISE_MPS, len(lat))
        heading = (np.array(bearing) + rng.normal(0, heading_noise_deg, len(lat))) % 360.0
        traces.append((nlat, nlng, speed, heading, np.array(edge)))
    return traces


def _bearing_deg(lat1, lng1, lat2, lng2) -> float:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lng2 - lng1)
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return float((np.degrees(np.arctan2(x, y)) + 360.0) % 360.0)


def on_true_street(g, matched: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Matched to the true street piece (either direction of a two-way street)."""
    matched = np.asarray(matched, np.int64)
    return (matched == true) | ((g.twin[true] >= 0) & (matched == g.twin[true]))
