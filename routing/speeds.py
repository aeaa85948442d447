"""Travel speeds for road segments: the OSM `maxspeed` tag where present, else a per-road-class default.

A `SpeedProfile` names the default free-flow speed of each road class and the
meaning of implicit limits such as `PT:urban`; profiles differ per country
(a Portuguese `residential` street is not a Finnish one). Speeds are km/h here,
because that is how OSM and traffic engineers state them; the graph turns them
into per-edge travel times in seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# Road classes the drive network keeps, in a fixed order: the graph stores the
# index (int8) so arrays stay compact and `with_speed_factors` can address a
# class by name. "other" catches odd highway values (`road`, `bus_stop`, typos).
ROAD_CLASSES: tuple[str, ...] = (
    "motorway",
    "motorway_link",
    "trunk",
    "trunk_link",
    "primary",
    "primary_link",
    "secondary",
    "secondary_link",
    "tertiary",
    "tertiary_link",
    "unclassified",
    "residential",
    "living_street",
    "service",
    "other",
)
CLASS_INDEX = {name: i for i, name in enumerate(ROAD_CLASSES)}

# Free-flow urban speeds where `maxspeed` is missing. They are deliberately below
# the legal limits of most countries: untagged roads are mostly minor ones and a
# delivery van does not drive a residential street at the legal 50 km/h.
_BASE_KPH = {
    "motorway": 100.0,
    "motorway_link": 60.0,
    "trunk": 80.0,
    "trunk_link": 50.0,
    "primary": 50.0,
    "primary_link": 40.0,
    "secondary": 45.0,
    "secondary_link": 35.0,
    "tertiary": 40.0,
    "tertiary_link": 30.0,
    "unclassified": 30.0,
    "residential": 30.0,
    "living_street": 10.0,
    "service": 15.0,
    "other": 25.0,
}

# Implicit limits (`maxspeed=XX:zone`) shared by most of Europe.
_ZONES_EU = {"urban": 50.0, "rural": 90.0, "motorway": 120.0, "trunk": 100.0, "living_street": 20.0, "zone30": 30.0}


@dataclass(frozen=True)
class SpeedProfile:
    """Default speeds per road class (km/h) and implicit-limit zones for one country."""

    name: str
    class_kph: dict[str, float] = field(default_factory=lambda: dict(_BASE_KPH))
    zone_kph: dict[str, float] = field(default_factory=lambda: dict(_ZONES_EU))
    # A tagged limit is an upper bound, not what traffic does; 1.0 keeps it as is.
    tagged_factor: float = 1.0
    # Multipliers per road class on every speed of that class, tagged or not (traffic);
    # `Graph.with_speed_factors` applies the same thing to a built graph.
    class_factors: dict[str, float] = field(default_factory=dict)

    def class_speeds(self) -> np.ndarray:
        """Default speed per ROAD_CLASSES index, km/h (float32)."""
        return np.array([self.class_kph.get(c, self.class_kph.get("other", 25.0)) for c in ROAD_CLASSES], np.float32)

    def fingerprint(self) -> str:
        """Stable text that changes whenever the profile would change a built graph (cache key)."""
        items = sorted(self.class_kph.items()) + sorted(self.zone_kph.items())
        items += [(f"x{k}", v) for k, v in sorted(self.class_factors.items())]
        return f"{self.name}|{self.tagged_factor}|" + ",".join(f"{k}={v}" for k, v in items)


PROFILES: dict[str, SpeedProfile] = {
    "default": SpeedProfile("default"),
    "PT": SpeedProfile("PT", class_kph={**_BASE_KPH, "motorway": 110.0, "trunk": 80.0}),
    "FI": SpeedProfile(
        "FI",
        class_kph={**_BASE_KPH, "motorway": 100.0, "residential": 30.0, "unclassified": 40.0},
        zone_kph={**_ZONES_EU, "rural": 80.0, "motorway": 120.0},
    ),
    "DE": SpeedProfile("DE", zone_kph={**_ZONES_EU, "rural": 100.0, "motorway": 130.0}),
    "FR": SpeedProfile("FR", zone_kph={**_ZONES_EU, "rural": 80.0, "motorway": 130.0}),
    "US": SpeedProfile(
        "US",
        class_kph={**_BASE_KPH, "motorway": 105.0, "primary": 55.0, "residential": 40.0},
        zone_kph={"urban": 40.0, "rural": 90.0, "motorway": 105.0},
    ),
}


def profile(name: str | SpeedProfile | None) -> SpeedProfile:
    """Look a profile up by country code (ISO 3166 alpha-2) or pass one through; unknown codes get "default"."""
    if isinstance(name, SpeedProfile):
        return name
    return PROFILES.get(str(name or "default").upper(), PROFILES["default"])


def road_class(highway: str | None) -> int:
    """Index into ROAD_CLASSES of an OSM `highway` value (`"primary;secondary"` takes the first)."""
    if not highway:
        return CLASS_INDEX["other"]
    first = str(highway).split(";")[0].strip()
    return CLASS_INDEX.get(first, CLASS_INDEX["other"])


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)\s*(mph|knots|km/h|kmh|kph)?")


def parse_maxspeed(value: object, prof: SpeedProfile) -> float:
    """Speed in km/h from a `maxspeed` value, NaN if it says nothing usable.

    Handles `50`, `30 mph`, `50;30` (the mean, as osmnx does), `PT:urban`,
    `walk` and `none` (no limit: we return NaN so the class default applies,
    rather than inventing an autobahn speed for a city van).
    """
    if value is None:
        return float("nan")
    text = str(value).strip().lower()
    if not text or text in {"nan", "none", "signals", "variable", "unknown"}:
        return float("nan")
    if text == "walk":
        return 7.0
    if ":" in text and not text[0].isdigit():
        zone = text.split(":", 1)[1]
        return float(prof.zone_kph.get(zone, float("nan")))
    speeds = []
    for part in text.replace("|", ";").split(";"):
        m = _NUMBER.search(part)
        if not m:
            continue
        kph = float(m.group(1))
        unit = m.group(2)
        if unit == "mph":
            kph *= 1.609344
        elif unit == "knots":
            kph *= 1.852
        if 3.0 <= kph <= 200.0:  # ignore nonsense such as maxspeed=1 or 500
            speeds.append(kph)
    return float(np.mean(speeds)) if speeds else float("nan")


def segment_speeds_kph(highway_class: np.ndarray, maxspeed: list, prof: SpeedProfile) -> np.ndarray:
    """Speed (km/h, float32) for each segment: tagged limit × tagged_factor where parseable, else the class default."""
    defaults = prof.class_speeds()[highway_class]
    cache: dict[object, float] = {}
    tagged = np.empty(len(maxspeed), np.float64)
    for i, v in enumerate(maxspeed):
        s = cache.get(v)
        if s is None:
            s = cache[v] = parse_maxspeed(v, prof)
        tagged[i] = s
    out = np.where(np.isnan(tagged), defaults, tagged * prof.tagged_factor)
    if prof.class_factors:
        scale = np.ones(len(ROAD_CLASSES))
        for name, factor in prof.class_factors.items():
            scale[CLASS_INDEX[name]] = factor
        out = out * scale[highway_class]
    return out.astype(np.float32)


# Time-of-day traffic: a multiplier on free-flow speed per road class and hour.
# These defaults are an assumption, not a measurement: a typical European city
# weekday (arterials lose ~35 % at the peaks, residential streets ~10 %), to be
# replaced by factors learned from our own GPS traces. Hours not listed are 1.0.
_PEAK = {"motorway": 0.7, "motorway_link": 0.7, "trunk": 0.65, "trunk_link": 0.7, "primary": 0.65,
         "primary_link": 0.7, "secondary": 0.7, "secondary_link": 0.75, "tertiary": 0.8, "tertiary_link": 0.8,
         "unclassified": 0.9, "residential": 0.9}
_SHOULDER = {k: round(1 - (1 - v) / 2, 3) for k, v in _PEAK.items()}
WEEKDAY_FACTORS: dict[int, dict[str, float]] = {
    7: _SHOULDER, 8: _PEAK, 9: _SHOULDER, 12: {k: round(1 - (1 - v) / 3, 3) for k, v in _PEAK.items()},
    16: _SHOULDER, 17: _PEAK, 18: _PEAK, 19: _SHOULDER,
}


def traffic_factors(hour: int, table: dict[int, dict[str, float]] | None = None) -> dict[str, float]:
    """Per-road-class speed factors for an hour of day (0-23) from `table` (default: WEEKDAY_FACTORS)."""
    if not 0 <= int(hour) <= 23:
        raise ValueError(f"hour must be 0-23, got {hour}")
    return dict((WEEKDAY_FACTORS if table is None else table).get(int(hour), {}))
