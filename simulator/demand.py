"""Customers: a seeded order book (when, where, which window, who is home) on a daily demand curve.

The book depends only on the seed, the city, the rate, the duration and the start hour —
not on the wall clock or on how the platform answers — so the same seed gives the same
orders and the same ground truth for the customers. Arrivals are a non-homogeneous Poisson
process (thinning) under a weekday curve with a lunch and an after-work peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.city import City

FIRST_NAMES = ("Aino", "Eero", "Helmi", "Onni", "Ella", "Leo", "Sofia", "Eino", "Olivia", "Väinö", "Lilja", "Oliver")
LAST_NAMES = ("Virtanen", "Korhonen", "Mäkinen", "Nieminen", "Mäkelä", "Hämäläinen", "Laine", "Heikkinen", "Koskinen")


def demand_curve(hour: float) -> float:
    """Relative order rate at a local hour (mean over the day ≈ 1)."""
    h = hour % 24.0
    base = 0.25 + 1.1 * math.exp(-((h - 12.0) / 2.0) ** 2) + 1.4 * math.exp(-((h - 18.5) / 2.2) ** 2)
    night = 0.15 if h < 6 or h > 23 else 1.0
    return base * night / 0.62


@dataclass(frozen=True)
class Order:
    index: int
    t_s: float  # simulated seconds after the start when the customer orders
    lat: float
    lng: float
    window_start_s: float  # sim seconds after the start
    window_end_s: float
    name: str
    absent: tuple[bool, bool]  # nobody home at the first / second attempt
    channel: str  # "api" (POST /v1/deliveries) or "commerce" (guest checkout)
    basket: tuple[int, ...]  # indices into the catalog the customer picks from (commerce)
    watches: bool  # opens the tracking link and keeps it open


def order_book(city: City, *, rng_seed: int, orders_per_hour: float, duration_s: float, start_hour: float,
               absent_p: float, commerce_share: float, watch_share: float, window_s: float = 2 * 3600.0,
               max_orders: int | None = None) -> list[Order]:
    """The orders of one run, in time order."""
    rng = np.random.default_rng([rng_seed, 1])
    peak = max(demand_curve(start_hour + h / 4) for h in range(int(duration_s / 900) + 2)) * orders_per_hour / 3600.0
    times = []
    t = 0.0
    while peak > 0:
        t += rng.exponential(1.0 / peak)
        if t >= duration_s:
            break
        if rng.random() < demand_curve(start_hour + t / 3600.0) * orders_per_hour / 3600.0 / peak:
            times.append(t)
        if max_orders is not None and len(times) >= max_orders:
            break
    places = city.sample_addresses(len(times), rng)
    out = []
    for i, (t, (lat, lng)) in enumerate(zip(times, places, strict=True)):
        name = f"{FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))]} {LAST_NAMES[int(rng.integers(len(LAST_NAMES)))]}"
        absent = (bool(rng.random() < absent_p), bool(rng.random() < absent_p))
        basket = tuple(int(x) for x in rng.integers(0, 1_000_000, size=int(rng.integers(1, 4))))
        out.append(Order(i, t, lat, lng, t, t + window_s, name, absent,
                         "commerce" if rng.random() < commerce_share else "api", basket, bool(rng.random() < watch_share)))
    return out
