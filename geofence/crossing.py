"""Crossing detection: did the straight path between two fixes pass through a zone?

A vehicle at 20 m/s with a fix every 5 s moves 100 m between fixes, more than the
diameter of a drop-off circle, so testing only the fixes would miss a pass through
it. We test the segment between consecutive fixes instead: it is sampled every
`step_m` metres (lng/lat interpolated, matching the zones' planar edges) and each
sample's signed distance to the zone's boundary is computed. The deepest sample
gives the penetration depth, which the hysteresis compares with the fixes'
accuracy, so a chord that only grazes an edge by GPS noise does not count.
Sampling under-estimates the depth by at most step_m / 2 (the distance function
is 1-Lipschitz), i.e. it errs on the side of not firing. Rejected: an exact
segment-polygon intersection (shapely `intersects` on a LineString) answers only
"touches or not", which would fire on every 1 m graze.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geofence.zones import ZoneIndex

_M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True)
class Crossing:
    """A pass through a zone along a segment: where it entered and left, and how deep it went."""

    zone_id: str
    entry_fraction: float  # 0..1 along the segment, first sample inside
    exit_fraction: float  # last sample inside
    depth_m: float  # deepest sample's distance inside the boundary (> 0)


def segment_length_m(*, lat1_deg: float, lng1_deg: float, lat2_deg: float, lng2_deg: float) -> float:
    """Equirectangular length at the mean latitude; within 0.1 % for segments under 50 km."""
    kx = _M_PER_DEG_LAT * math.cos(math.radians((lat1_deg + lat2_deg) / 2.0))
    return math.hypot((lng2_deg - lng1_deg) * kx, (lat2_deg - lat1_deg) * _M_PER_DEG_LAT)


def segment_crossing(index: ZoneIndex, *, zone_id: str, lat1_deg: float, lng1_deg: float,
                     lat2_deg: float, lng2_deg: float, step_m: float = 5.0,
                     max_samples: int = 2000) -> Crossing | None:
    """The pass of segment 1->2 through the zone, or None if no sample lies inside it."""
    length_m = segment_length_m(lat1_deg=lat1_deg, lng1_deg=lng1_deg, lat2_deg=lat2_deg,
                                lng2_deg=lng2_deg)
    n = int(min(max_samples, max(2, math.ceil(length_m / step_m) + 1)))
    t = np.linspace(0.0, 1.0, n)
    lat = lat1_deg + (lat2_deg - lat1_deg) * t
    lng = lng1_deg + (lng2_deg - lng1_deg) * t
    d = index.signed_distance_m(zone_id=zone_id, lat_deg=lat, lng_deg=lng)
    inside = np.flatnonzero(d <= 0.0)
    if len(inside) == 0:
        return None
    return Crossing(zone_id=zone_id, entry_fraction=float(t[inside[0]]),
                    exit_fraction=float(t[inside[-1]]), depth_m=float(-d.min()))
