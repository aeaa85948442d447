"""Reading zones (GeoJSON) and points (CSV) from files, with errors that name the file and line.

Used by `serena geofence classify` and usable from a notebook. Every problem raises
InputError whose message is one line, `FILE:LINE: what is wrong`, so a caller can
print it as is. GeoJSON features are located by decoding the top-level object and
the `features` array element by element (json.JSONDecoder.raw_decode gives each
element's offset); json.load alone would say only "feature 12".
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from geofence.zones import Zone, ZoneError

POINTS_HEADER = ["id", "lat", "lng"]


class InputError(ValueError):
    """A bad input file; str() is a one-line `file:line: message`."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from None


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _feature_offsets(text: str) -> list[int]:
    """Start offsets of the elements of the top-level `features` array (text is valid JSON)."""
    dec = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "{":
        return []
    pos = _skip_ws(text, pos + 1)
    while pos < len(text) and text[pos] != "}":
        key, pos = dec.raw_decode(text, pos)
        pos = _skip_ws(text, pos) + 1  # ':'
        pos = _skip_ws(text, pos)
        if key == "features" and text[pos] == "[":
            offsets = []
            pos = _skip_ws(text, pos + 1)
            while text[pos] != "]":
                offsets.append(pos)
                _, pos = dec.raw_decode(text, pos)
                pos = _skip_ws(text, pos)
                if text[pos] == ",":
                    pos = _skip_ws(text, pos + 1)
            return offsets
        _, pos = dec.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return []


def read_zones_geojson(path: str | Path, *, id_property: str = "id") -> list[Zone]:
    """Zones from a FeatureCollection of Polygon/MultiPolygon features with an id property."""
    path = Path(path)
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise InputError(path, "not a GeoJSON FeatureCollection", line=1)
    features = doc.get("features")
    if not isinstance(features, list):
        raise InputError(path, "FeatureCollection has no 'features' array", line=1)
    def fail(n: int, message: str) -> InputError:
        # Locating a feature re-scans the text, so it is done only for the one that failed.
        offsets = _feature_offsets(text)
        line = _line_of(text, offsets[n]) if n < len(offsets) else None
        return InputError(path, f"feature {n}: {message}", line=line)

    zones: list[Zone] = []
    seen: dict[str, int] = {}
    for n, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise fail(n, "not a GeoJSON Feature")
        props = feature.get("properties")
        if not isinstance(props, dict) or props.get(id_property) in (None, ""):
            raise fail(n, f"no '{id_property}' property")
        try:
            zone = Zone.from_geojson(feature, id_property=id_property)
        except ZoneError as exc:
            raise fail(n, str(exc)) from None
        if not zone.geometry.is_valid:
            from shapely.validation import explain_validity

            raise fail(n, f"zone {zone.zone_id!r} is not a valid polygon "
                          f"({explain_validity(zone.geometry)})")
        if zone.zone_id in seen:
            raise fail(n, f"duplicate id {zone.zone_id!r} (also feature {seen[zone.zone_id]})")
        seen[zone.zone_id] = n
        zones.append(zone)
    return zones


def _parse_coord(path: Path, line: int, name: str, raw: str, limit: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InputError(path, f"{name} {raw!r} is not a number", line=line) from None
    if not math.isfinite(value):
        raise InputError(path, f"{name} {raw!r} is not a finite number", line=line)
    if not -limit <= value <= limit:
        raise InputError(path, f"{name} {raw!r} is out of range [-{limit:g}, {limit:g}]", line=line)
    return value


def iter_points_csv(path: str | Path) -> Iterator[tuple[int, str, float, float]]:
    """(line, id, lat, lng) per data row of an `id,lat,lng` CSV; blank lines are skipped."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(path, f"empty file; expected header {','.join(POINTS_HEADER)}", line=1)
            if [h.strip() for h in header] != POINTS_HEADER:
                raise InputError(path, f"header is {','.join(header)!r}, expected "
                                 f"{','.join(POINTS_HEADER)!r}", line=1)
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != 3:
                    raise InputError(path, f"expected 3 fields (id,lat,lng), got {len(row)}", line=line)
                pid, raw_lat, raw_lng = row
                lat = _parse_coord(path, line, "lat", raw_lat.strip(), 90.0)
                lng = _parse_coord(path, line, "lng", raw_lng.strip(), 180.0)
                yield line, pid, lat, lng
        except csv.Error as exc:
            raise InputError(path, f"malformed CSV ({exc})", line=reader.line_num) from None
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not UTF-8 text ({exc.reason})") from None


def read_points_csv(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Point ids and lat/lng arrays from an `id,lat,lng` CSV."""
    ids: list[str] = []
    lats: list[float] = []
    lngs: list[float] = []
    for _, pid, lat, lng in iter_points_csv(path):
        ids.append(pid)
        lats.append(lat)
        lngs.append(lng)
    return ids, np.array(lats, dtype=np.float64), np.array(lngs, dtype=np.float64)
