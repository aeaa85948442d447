"""Geofence engine: zones indexed by an H3 cover, exact batch point->zone lookup, crossing
detection and a per-driver hysteresis/dwell state machine. Pure library (numpy, numba,
shapely, h3): usable from a notebook without a server. See docs/geofence.md.
"""

from geofence.crossing import Crossing, segment_crossing
from geofence.hysteresis import (
    STOP_ARRIVED,
    STOP_ARRIVING,
    ZONE_DWELL,
    ZONE_ENTERED,
    ZONE_EXITED,
    DriverTracker,
    FixResult,
    GeofenceEvent,
    Stop,
    TrackerConfig,
)
from geofence.zones import Matches, Zone, ZoneError, ZoneIndex, zones_from_geojson, zones_to_geojson

__all__ = [
    "Crossing", "DriverTracker", "FixResult", "GeofenceEvent", "Matches", "STOP_ARRIVED",
    "STOP_ARRIVING", "Stop", "TrackerConfig", "ZONE_DWELL", "ZONE_ENTERED", "ZONE_EXITED", "Zone",
    "ZoneError", "ZoneIndex", "segment_crossing", "zones_from_geojson", "zones_to_geojson",
]
