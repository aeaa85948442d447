"""Time-of-day traffic: a speed factor per road class and hour, a per-driver factor, per-edge noise.

The profile is a stylised weekday: morning and evening peaks slow the arterial classes
most (primary/secondary/trunk carry the commuters), residential streets barely change.
Rejected alternative: one global factor for all roads — it would make the planner's
per-class speed model trivially right or trivially wrong, and the point of the grade is to
see how the platform copes with a city that does not drive at its free-flow speeds.
"""

from __future__ import annotations

import math

import numpy as np

from routing import speeds

# Depth of the peak slowdown per road class (0 = unaffected, 0.45 = 45 % slower at the peak).
_PEAK_DEPTH = {
    "motorway": 0.45, "motorway_link": 0.40, "trunk": 0.40, "trunk_link": 0.35, "primary": 0.40,
    "primary_link": 0.30, "secondary": 0.30, "secondary_link": 0.25, "tertiary": 0.20, "tertiary_link": 0.15,
    "unclassified": 0.10, "residential": 0.08, "living_street": 0.0, "service": 0.05, "other": 0.10,
}
_DEPTH = np.array([_PEAK_DEPTH[c] for c in speeds.ROAD_CLASSES], np.float64)


def congestion(hour: float) -> float:
    """0..1: how congested the city is at a local hour (peaks at 08:00 and 17:00)."""
    h = hour % 24.0
    return max(math.exp(-((h - 8.0) / 1.2) ** 2), math.exp(-((h - 17.0) / 1.5) ** 2), 0.25 * math.exp(-((h - 12.5) / 1.5) ** 2))


def class_factors(hour: float) -> np.ndarray:
    """Speed factor per road class index at a local hour (1 = free flow)."""
    return 1.0 - _DEPTH * congestion(hour)


def edge_factors(road_class: np.ndarray, hour: float, driver_factor: float, rng: np.random.Generator) -> np.ndarray:
    """Speed factors of the edges of one drive: class × time of day × driver × noise (lognormal, ~10 %)."""
    noise = rng.lognormal(0.0, 0.10, size=len(road_class))
    return class_factors(hour)[road_class] * driver_factor * noise
