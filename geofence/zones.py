"""Zones (polygons in lng/lat) and the ZoneIndex that classifies many points against them exactly.

A ZoneIndex covers every zone with H3 cells of one resolution. A cell whose polygon,
grown by a safety margin, lies inside the zone answers "inside" at once; a cell that
only touches the zone keeps the few zone edges that can cross an eastward ray from
a point in that cell, and points there get GEOS's exact ray-crossing test on those
edges only; a point whose cell is not in the cover is outside. Answers therefore
equal shapely's `intersects` (boundary counts as inside) for every point, and the
index does the work per point in one numba loop: H3 cell (see h3grid.py) -> hash
lookup -> at most a handful of exact edge tests. This is the two-pass query of a
spatial index (pre-filter, then exact test), with the pre-filter being the H3 cover
instead of an R-tree, because the cover also serves the tracking and pricing code.
Cells are classified against the zone grown or shrunk by a one-metre margin, so a
point attributed to a neighbouring cell by any error below that margin still gets
the exact answer (interior cells clear the edge by the margin, boundary cells keep
every edge within it, cells off the cover are farther than it); see docs/geofence.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import h3
import h3.api.numpy_int as h3n
import numba
import numpy as np
import shapely
from pyproj import Geod
from shapely.geometry import MultiPolygon, Polygon, shape

from geofence import h3grid
from geofence.predicates import covers_point

def _drop_stale_kernel_cache() -> None:
    """Delete this module's cached numba kernels when h3grid.py or predicates.py changed.

    numba's on-disk cache is keyed by the kernel's own file only, but our kernels
    compile in code from those two files; a stale cache would run their old version.
    Best effort: a read-only install simply keeps (and cannot have edited) its cache.
    """
    import hashlib
    from pathlib import Path

    here = Path(__file__).resolve().parent
    try:
        digest = hashlib.sha256(b"".join((here / name).read_bytes()
                                         for name in ("h3grid.py", "predicates.py"))).hexdigest()
        cache = here / "__pycache__"
        stamp = cache / "zones.kernel-deps"
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for stale in cache.glob("zones.*.nb[ic]"):
            stale.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass


_drop_stale_kernel_cache()

DEFAULT_RESOLUTION = 9  # ~174 m hexagon edge: a city zone is hundreds of cells, a drop-off circle 1-3
_WGS84 = Geod(ellps="WGS84")
_WGS84_A_M = 6378137.0
_WGS84_E2 = 6.69437999014e-3
_M_PER_DEG_LAT_APPROX = 111_320.0


class ZoneError(ValueError):
    """A zone that cannot be indexed (not a polygon, empty, invalid, no id)."""


@dataclass(frozen=True)
class Zone:
    """A named area: a shapely Polygon/MultiPolygon with x = lng and y = lat, in degrees."""

    zone_id: str
    geometry: Polygon | MultiPolygon
    kind: str = "zone"  # free text: "delivery", "depot", "dropoff", ...
    properties: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.zone_id, str) or not self.zone_id:
            raise ZoneError("zone_id must be a non-empty string")
        if not isinstance(self.geometry, (Polygon, MultiPolygon)):
            raise ZoneError(f"zone {self.zone_id!r}: geometry must be a Polygon or MultiPolygon, "
                            f"not {self.geometry.geom_type}")
        if self.geometry.is_empty:
            raise ZoneError(f"zone {self.zone_id!r}: empty geometry")
        minx, miny, maxx, maxy = self.geometry.bounds
        if not (-180.0 <= minx and maxx <= 180.0 and -90.0 <= miny and maxy <= 90.0):
            raise ZoneError(f"zone {self.zone_id!r}: coordinates must be lng in [-180, 180], "
                            "lat in [-90, 90] (x = lng, y = lat)")

    @classmethod
    def from_geometry(cls, *, zone_id: str, geometry: Polygon | MultiPolygon, kind: str = "zone",
                      properties: Mapping[str, Any] | None = None) -> Zone:
        """A zone from a shapely geometry (x = lng, y = lat)."""
        return cls(zone_id=zone_id, geometry=geometry, kind=kind, properties=dict(properties or {}))

    @classmethod
    def from_geojson(cls, feature: Mapping[str, Any], *, id_property: str = "id",
                     kind: str = "zone") -> Zone:
        """A zone from a GeoJSON Feature whose properties carry the id (or the Feature's own id)."""
        props = dict(feature.get("properties") or {})
        zone_id = props.get(id_property, feature.get("id"))
        if zone_id is None or zone_id == "":
            raise ZoneError(f"feature has no {id_property!r} property")
        geometry = feature.get("geometry")
        if not isinstance(geometry, Mapping) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
            got = (geometry.get("type") if isinstance(geometry, Mapping)
                   else "null" if geometry is None else type(geometry).__name__)
            raise ZoneError(f"zone {zone_id!r}: geometry must be Polygon or MultiPolygon, not {got}")
        try:
            geom = shape(geometry)
        except Exception as exc:  # shapely raises several types on malformed coordinates
            raise ZoneError(f"zone {zone_id!r}: malformed coordinates ({exc})") from None
        return cls(zone_id=str(zone_id), geometry=geom, kind=str(props.get("kind", kind)),
                   properties=props)

    def to_geojson(self, *, id_property: str = "id") -> dict[str, Any]:
        """A GeoJSON Feature (JSON-safe properties: id, kind and the zone's own)."""
        props = {k: v for k, v in self.properties.items() if k not in ("center",)}
        props.update({id_property: self.zone_id, "kind": self.kind})
        if "center" in self.properties:
            props["center"] = list(self.properties["center"])
        return {"type": "Feature", "properties": props,
                "geometry": shapely.geometry.mapping(self.geometry)}

    @classmethod
    def circle(cls, *, zone_id: str, lat_deg: float, lng_deg: float, radius_m: float,
               kind: str = "dropoff", segments: int = 64) -> Zone:
        """A circle as a polygon whose vertices lie on the WGS84 geodesic circle.

        The polygon is inscribed, so it is smaller than the true circle by at most
        radius_m * (1 - cos(pi / segments)): 0.12 % (2.4 cm for 20 m) with 64 segments.
        """
        if not radius_m > 0:
            raise ZoneError(f"zone {zone_id!r}: radius_m must be > 0")
        az = np.linspace(0.0, 360.0, segments, endpoint=False)
        lngs, lats, _ = _WGS84.fwd(np.full(segments, lng_deg), np.full(segments, lat_deg), az,
                                   np.full(segments, float(radius_m)))
        # counter-clockwise shell, as GeoJSON recommends
        ring = np.column_stack([lngs, lats])[::-1]
        return cls(zone_id=zone_id, geometry=Polygon(ring), kind=kind,
                   properties={"center": (lat_deg, lng_deg), "radius_m": float(radius_m)})


def zones_to_geojson(zones: Iterable[Zone], *, id_property: str = "id") -> dict[str, Any]:
    """A FeatureCollection of the zones, readable back by zones_from_geojson."""
    return {"type": "FeatureCollection",
            "features": [z.to_geojson(id_property=id_property) for z in zones]}


def zones_from_geojson(collection: Mapping[str, Any], *, id_property: str = "id") -> list[Zone]:
    """Zones from a GeoJSON FeatureCollection; raises ZoneError naming the feature index."""
    if collection.get("type") != "FeatureCollection":
        raise ZoneError("expected a GeoJSON FeatureCollection")
    zones = []
    for n, feature in enumerate(collection.get("features") or []):
        try:
            zones.append(Zone.from_geojson(feature, id_property=id_property))
        except ZoneError as exc:
            raise ZoneError(f"feature {n}: {exc}") from None
    return zones


# --------------------------------------------------------------------------------------
# per-zone prepared data


def _ring_edges(geom: Polygon | MultiPolygon) -> np.ndarray:
    """(x1, y1, x2, y2) rows for every edge of every ring (shells and holes)."""
    rows = []
    for ring in shapely.get_rings(shapely.get_parts(geom)):
        xy = shapely.get_coordinates(ring)
        if len(xy) >= 2:
            rows.append(np.hstack([xy[:-1], xy[1:]]))
    return np.vstack(rows) if rows else np.empty((0, 4))


@dataclass
class _Cover:
    """A zone's H3 cover: keys and h3 ids per cell, interior flag, edges per boundary cell."""

    keys: np.ndarray  # int64 face-ijk keys
    cells: np.ndarray  # uint64 H3 indexes (for the face-edge fallback)
    interior: np.ndarray  # bool
    edge_offsets: np.ndarray  # int64, len(cells)+1, into edge_ids
    edge_ids: np.ndarray  # int32, local to the zone's edges


def _margin(*, res: int, max_abs_lat_deg: float) -> tuple[float, float]:
    """Safety margin (metres, degrees) by which a cell must clear the zone edge to count.

    It absorbs (a) H3 cell edges being great-circle arcs while we test the straight
    lng/lat polygon through the cell's vertices (deviation <= L^2 tan(lat) / 8R for
    an edge of length L), and (b) last-bit differences between our cell lookup and
    H3's, which move a point by nanometres. 1 m plus a generous bound on (a).
    """
    edge_m = 2.0 * h3.average_hexagon_edge_length(res, unit="m")
    lat = math.radians(min(max_abs_lat_deg, 85.0))
    margin_m = 1.0 + edge_m * edge_m * (1.0 + math.tan(lat)) / (2.0 * h3grid.EARTH_RADIUS_M)
    margin_deg = margin_m / (_M_PER_DEG_LAT_APPROX * math.cos(lat))  # the larger (lng) degree
    return margin_m, margin_deg


def _cover_zone(geom: Polygon | MultiPolygon, edges: np.ndarray, res: int) -> _Cover:
    minx, miny, maxx, maxy = geom.bounds
    _, margin_deg = _margin(res=res, max_abs_lat_deg=max(abs(miny), abs(maxy)))
    edge_deg = 2.0 * h3.average_hexagon_edge_length(res, unit="m") / (
        _M_PER_DEG_LAT_APPROX * math.cos(math.radians(min(85.0, max(abs(miny), abs(maxy))))))
    grown = geom.buffer(margin_deg)
    # Candidates: cells whose centre lies in the zone grown by the margin plus a cell's
    # circumradius (edge_deg is twice the average edge, more than any cell's), which
    # includes every cell touching the margin-grown zone. shapely's buffer puts its
    # vertices on the offset curve, so with quad_segs=2 it is only guaranteed to
    # contain the offset by cos(pi/8) = 0.92 of the distance: ask for 1/0.9 of it.
    # Rejected: H3's "overlap" containment, ~10x slower on the round buffers.
    search = geom.buffer((margin_deg + edge_deg) / 0.9, quad_segs=2)
    cand = np.unique(np.asarray(h3n.h3shape_to_cells(h3.geo_to_h3shape(search), res),
                                dtype=np.uint64))
    if len(cand) == 0:
        return _Cover(np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, bool),
                      np.zeros(1, np.int64), np.empty(0, np.int32))
    boundaries = [np.asarray(h3n.cell_to_boundary(c))[:, ::-1] for c in cand]  # (lng, lat)
    # Cells touching an icosahedron edge have more than 6 vertices: build ragged rings.
    lens = np.array([len(b) for b in boundaries])
    rings = shapely.linearrings(np.vstack(boundaries), indices=np.repeat(np.arange(len(lens)), lens))
    polys = shapely.polygons(rings)
    shapely.prepare(grown)
    keep = shapely.intersects(grown, polys)
    cand, polys = cand[keep], polys[keep]
    shrunk = geom.buffer(-margin_deg)
    if shrunk.is_empty:
        interior = np.zeros(len(cand), dtype=bool)
    else:
        shapely.prepare(shrunk)
        interior = shapely.contains(shrunk, polys)
    centers = np.array([h3n.cell_to_latlng(c) for c in cand])
    keys, _ = h3grid.keys_for_points(centers[:, 0].copy(), centers[:, 1].copy(), res, 0.0,
                                     h3grid.face_table(res=res))
    # Edges that can cross the eastward ray of a point in a boundary cell: those
    # spanning the cell's latitude range and not wholly west of it (margin-grown).
    bounds = shapely.bounds(polys) + np.array([-margin_deg, -margin_deg, margin_deg, margin_deg])
    ex_max = np.maximum(edges[:, 0], edges[:, 2])
    ey_min = np.minimum(edges[:, 1], edges[:, 3])
    ey_max = np.maximum(edges[:, 1], edges[:, 3])
    counts = np.zeros(len(cand), dtype=np.int64)
    parts = []
    bcells = np.flatnonzero(~interior)
    step = max(1, 4_000_000 // max(1, len(edges)))  # bound the (cells x edges) matrix
    for s0 in range(0, len(bcells), step):
        cells = bcells[s0:s0 + step]
        b = bounds[cells]
        hit = ((ey_max[None, :] >= b[:, 1:2]) & (ey_min[None, :] <= b[:, 3:4])
               & (ex_max[None, :] >= b[:, 0:1]))
        counts[cells] = hit.sum(axis=1)
        parts.append(np.nonzero(hit)[1].astype(np.int32))  # row-major: grouped by cell
    offsets = np.zeros(len(cand) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    edge_ids = np.concatenate(parts) if parts else np.empty(0, np.int32)
    return _Cover(keys=keys, cells=cand, interior=interior, edge_offsets=offsets,
                  edge_ids=edge_ids.astype(np.int32))


@dataclass
class _Prepared:
    zone: Zone
    edges: np.ndarray
    cover: _Cover


# --------------------------------------------------------------------------------------
# numba kernels over the assembled tables


@numba.njit(cache=True)
def _hash_slot(key: int, mask: int) -> int:
    # splitmix64's finaliser: the packed (face, i, j, k) keys of a city differ only in
    # a few low bits of each field, and a plain multiplicative hash clustered them
    # into probe runs of ~50 slots.
    x = np.uint64(key)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return np.int64(x & np.uint64(mask))


@numba.njit(cache=True)
def _build_hash(keys: np.ndarray, capacity: int):
    table_keys = np.full(capacity, -1, dtype=np.int64)
    table_rows = np.full(capacity, -1, dtype=np.int32)
    mask = capacity - 1
    for r in range(keys.shape[0]):
        s = _hash_slot(keys[r], mask)
        while table_keys[s] != -1:
            s = (s + 1) & mask
        table_keys[s] = keys[r]
        table_rows[s] = r
    return table_keys, table_rows


@numba.njit(cache=True)
def _rows_for_points(lat_deg, lng_deg, res, guard_sin, tiles, bbox, table_keys, table_rows, rows):
    """Cover row per point: >= 0 a cover cell, -1 none, -2 near a face edge (resolve in Python)."""
    mask = table_keys.shape[0] - 1
    d2r = math.pi / 180.0
    for p in range(lat_deg.shape[0]):
        la = lat_deg[p]
        ln = lng_deg[p]
        # Outside the cover's bounding box (or NaN): no zone, and no need for the cell.
        if not (la >= bbox[1] and la <= bbox[3] and ln >= bbox[0] and ln <= bbox[2]):
            rows[p] = -1
            continue
        key, near = h3grid.face_ijk_key(la * d2r, ln * d2r, res, guard_sin, tiles)
        if near:
            rows[p] = -2
            continue
        s = _hash_slot(key, mask)
        r = -1
        while table_keys[s] != -1:
            if table_keys[s] == key:
                r = table_rows[s]
                break
            s = (s + 1) & mask
        rows[p] = r


@numba.njit(cache=True)
def _matches_for_rows(lat_deg, lng_deg, rows, start, row_entries, entry_zone, entry_interior,
                      entry_edge_offsets, entry_edge_ids, edges, offsets, out, out_start):
    """Append matching zone slots per point from `start`; stop when `out` is full.

    Returns the first point not written (== n when done) and the fill level of out.
    """
    n = lat_deg.shape[0]
    w = out_start
    cap = out.shape[0]
    for p in range(start, n):
        r = rows[p]
        if r >= 0:
            e0 = row_entries[r]
            e1 = row_entries[r + 1]
            if w + (e1 - e0) > cap:
                return p, w
            for e in range(e0, e1):
                if entry_interior[e]:
                    out[w] = entry_zone[e]
                    w += 1
                else:
                    ids = entry_edge_ids[entry_edge_offsets[e]:entry_edge_offsets[e + 1]]
                    if covers_point(lng_deg[p], lat_deg[p], edges, ids):
                        out[w] = entry_zone[e]
                        w += 1
        offsets[p + 1] = w
    return n, w


@numba.njit(cache=True)
def _signed_distance_m(lat_deg, lng_deg, edges, out):
    """Signed distance to the rings' edges in metres, negative inside (boundary = 0).

    Each point uses a local projection centred on itself, with WGS84 radii of
    curvature at its latitude: the error is relative, at most about tan|lat| * d / R
    for a nearest edge d metres away (2e-5 at 100 m and 52 deg), far below GPS accuracy.
    """
    d2r = math.pi / 180.0
    all_ids = np.arange(edges.shape[0])
    for p in range(lat_deg.shape[0]):
        la = lat_deg[p]
        ln = lng_deg[p]
        s = math.sin(la * d2r)
        w = math.sqrt(1.0 - _WGS84_E2 * s * s)
        ky = _WGS84_A_M * (1.0 - _WGS84_E2) / (w * w * w) * d2r  # metres per degree of lat
        kx = _WGS84_A_M / w * math.cos(la * d2r) * d2r  # metres per degree of lng
        best = np.inf
        for e in range(edges.shape[0]):
            ax = (edges[e, 0] - ln) * kx
            ay = (edges[e, 1] - la) * ky
            bx = (edges[e, 2] - ln) * kx
            by = (edges[e, 3] - la) * ky
            dx = bx - ax
            dy = by - ay
            ll = dx * dx + dy * dy
            t = 0.0 if ll == 0.0 else min(1.0, max(0.0, -(ax * dx + ay * dy) / ll))
            qx = ax + t * dx
            qy = ay + t * dy
            d2 = qx * qx + qy * qy
            if d2 < best:
                best = d2
        d = math.sqrt(best)
        if covers_point(ln, la, edges, all_ids):
            d = -d
        out[p] = d


# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matches:
    """Zones per point in CSR form: point p is in zone_ids[zone_slots[offsets[p]:offsets[p+1]]]."""

    offsets: np.ndarray  # int64, n + 1
    zone_slots: np.ndarray  # int32 into zone_ids
    zone_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        """Number of zones containing each point."""
        return np.diff(self.offsets)

    def zones_of(self, p: int) -> list[str]:
        """Sorted zone ids containing point p."""
        return sorted(self.zone_ids[s] for s in self.zone_slots[self.offsets[p]:self.offsets[p + 1]])

    def joined(self, sep: str = ";") -> list[str]:
        """Per point, the sorted zone ids joined by sep ("" for none); fast for the common 0/1 case."""
        names = np.array(self.zone_ids + ("",), dtype=object)
        counts = self.counts()
        # the first slot of each point, or the "" sentinel when it has none
        first = np.where(counts > 0, self.zone_slots[np.minimum(self.offsets[:-1],
                                                                 max(0, len(self.zone_slots) - 1))]
                         if len(self.zone_slots) else 0, len(self.zone_ids))
        out = names[first].tolist()
        for p in np.flatnonzero(counts > 1):
            out[p] = sep.join(self.zones_of(int(p)))
        return out

    def as_lists(self) -> list[list[str]]:
        """Sorted zone ids for every point."""
        return [self.zones_of(p) for p in range(len(self))]


class ZoneIndex:
    """Point -> zones lookup over an H3 cover; exact, vectorised, rebuildable.

    Zones can be added and removed; each zone's cover is computed once when added,
    and the lookup tables are re-assembled from the per-zone covers on the next
    query (a concatenate-and-sort, milliseconds for thousands of zones).
    """

    def __init__(self, zones: Iterable[Zone] = (), *, resolution: int = DEFAULT_RESOLUTION):
        if not 0 <= resolution <= h3grid.MAX_RESOLUTION:
            raise ValueError(f"resolution must be in 0..{h3grid.MAX_RESOLUTION}")
        self.resolution = resolution
        self._guard_sin = h3grid.face_edge_guard_sin(res=resolution)
        self._face_table = h3grid.face_table(res=resolution)
        self._prepared: dict[str, _Prepared] = {}
        self._tables: dict[str, Any] | None = None
        self._bounds: tuple[tuple[str, ...], np.ndarray] | None = None
        self.version = 0  # bumped by every change, so callers can cache per version
        for zone in zones:
            self.add(zone)

    @classmethod
    def from_geojson(cls, collection: Mapping[str, Any], *, id_property: str = "id",
                     resolution: int = DEFAULT_RESOLUTION) -> ZoneIndex:
        """An index over the Polygon/MultiPolygon features of a GeoJSON FeatureCollection."""
        return cls(zones_from_geojson(collection, id_property=id_property), resolution=resolution)

    # -- membership -------------------------------------------------------------------

    def add(self, zone: Zone) -> None:
        """Add or replace a zone (by zone_id); ZoneError if its geometry is not valid."""
        if not zone.geometry.is_valid:
            # A self-intersecting ring has no agreed inside (shapely answers by ray
            # parity, PostGIS may differ) and its buffered cover would be meaningless.
            from shapely.validation import explain_validity

            raise ZoneError(f"zone {zone.zone_id!r}: invalid geometry ({explain_validity(zone.geometry)}); "
                            "shapely.make_valid can repair it")
        edges = _ring_edges(zone.geometry)
        cover = _cover_zone(zone.geometry, edges, self.resolution)
        self._prepared[zone.zone_id] = _Prepared(zone=zone, edges=edges, cover=cover)
        self._changed()

    def _changed(self) -> None:
        self._tables = None
        self._bounds = None
        self.version += 1

    def remove(self, zone_id: str) -> None:
        """Remove a zone; KeyError if absent."""
        del self._prepared[zone_id]
        self._changed()

    def rebuild(self, zones: Iterable[Zone]) -> None:
        """Replace all zones; zones whose geometry is unchanged keep their computed cover.

        So reloading every zone from the database (PostGIS, later) costs only the
        zones that changed.
        """
        old = self._prepared
        self._prepared = {}
        self._changed()
        for zone in zones:
            prev = old.get(zone.zone_id)
            if prev is not None and prev.zone.geometry.wkb == zone.geometry.wkb:
                self._prepared[zone.zone_id] = _Prepared(zone=zone, edges=prev.edges, cover=prev.cover)
            else:
                self.add(zone)

    def __len__(self) -> int:
        return len(self._prepared)

    def __contains__(self, zone_id: object) -> bool:
        return zone_id in self._prepared

    def zone(self, zone_id: str) -> Zone:
        """The zone with this id; KeyError if absent."""
        return self._prepared[zone_id].zone

    @property
    def zone_ids(self) -> tuple[str, ...]:
        return tuple(self._prepared)

    def cover_stats(self) -> dict[str, int]:
        """Cells in the cover: interior, boundary, and boundary edge references."""
        interior = sum(int(p.cover.interior.sum()) for p in self._prepared.values())
        total = sum(len(p.cover.keys) for p in self._prepared.values())
        refs = sum(len(p.cover.edge_ids) for p in self._prepared.values())
        return {"interior_cells": interior, "boundary_cells": total - interior, "edge_refs": refs}

    # -- tables -----------------------------------------------------------------------

    def _assemble(self) -> dict[str, Any]:
        if self._tables is not None:
            return self._tables
        preps = list(self._prepared.values())
        zone_ids = tuple(p.zone.zone_id for p in preps)
        edge_base = np.cumsum([0] + [len(p.edges) for p in preps])
        edges = np.vstack([p.edges for p in preps]) if preps else np.empty((0, 4))
        keys, cells, slots, interior, e_counts, e_ids = [], [], [], [], [], []
        for slot, p in enumerate(preps):
            c = p.cover
            keys.append(c.keys)
            cells.append(c.cells)
            slots.append(np.full(len(c.keys), slot, dtype=np.int32))
            interior.append(c.interior)
            e_counts.append(np.diff(c.edge_offsets))
            e_ids.append(c.edge_ids.astype(np.int64) + edge_base[slot])
        if preps and sum(len(k) for k in keys):
            keys = np.concatenate(keys)
            cells = np.concatenate(cells)
            slots = np.concatenate(slots)
            interior = np.concatenate(interior)
            e_counts = np.concatenate(e_counts)
            e_ids_flat = np.concatenate(e_ids)
        else:
            keys = np.empty(0, np.int64)
            cells = np.empty(0, np.uint64)
            slots = np.empty(0, np.int32)
            interior = np.empty(0, bool)
            e_counts = np.empty(0, np.int64)
            e_ids_flat = np.empty(0, np.int64)
        e_starts = np.concatenate([[0], np.cumsum(e_counts)]).astype(np.int64)
        # Sort entries by key (interior first within a cell, so a point in many
        # zones answers the cheap ones first); rows = distinct keys.
        order = np.lexsort((~interior, keys))
        keys_s = keys[order]
        uniq, first = np.unique(keys_s, return_index=True)
        row_entries = np.append(first, len(keys_s)).astype(np.int64)
        # Re-pack the edge lists in entry order.
        counts_s = e_counts[order]
        entry_edge_offsets = np.concatenate([[0], np.cumsum(counts_s)]).astype(np.int64)
        # gather each entry's edge ids in the new order, without a Python loop
        total = int(entry_edge_offsets[-1])
        idx = (np.arange(total, dtype=np.int64) - np.repeat(entry_edge_offsets[:-1], counts_s)
               + np.repeat(e_starts[:-1][order], counts_s))
        entry_edge_ids = e_ids_flat[idx].astype(np.int32) if total else np.empty(0, np.int32)
        capacity = 1 << max(4, int(math.ceil(math.log2(max(1, len(uniq)) * 2.0))))
        table_keys, table_rows = _build_hash(uniq.astype(np.int64), capacity)
        # H3 index -> row, for the rare points near an icosahedron face edge
        cell_ids = cells[order]
        cell_row_ids = np.searchsorted(uniq, keys_s)
        if preps:
            b = np.array([p.zone.geometry.bounds for p in preps])
            bbox = np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
            # No point outside every zone's bounds can be in a zone; inclusive compares
            # keep points on the bounds.
        else:
            bbox = np.array([1.0, 1.0, -1.0, -1.0])  # empty: nothing is inside
        self._tables = dict(
            zone_ids=zone_ids, edges=edges, edge_base=edge_base, table_keys=table_keys,
            table_rows=table_rows, row_entries=row_entries, entry_zone=slots[order],
            entry_interior=interior[order], entry_edge_offsets=entry_edge_offsets,
            entry_edge_ids=entry_edge_ids, cell_ids=cell_ids, cell_row_ids=cell_row_ids, bbox=bbox,
        )
        return self._tables

    # -- queries ----------------------------------------------------------------------

    def classify(self, *, lat_deg: np.ndarray, lng_deg: np.ndarray) -> Matches:
        """All zones containing each point (boundary counts as inside), as CSR Matches."""
        lat = np.ascontiguousarray(lat_deg, dtype=np.float64)
        lng = np.ascontiguousarray(lng_deg, dtype=np.float64)
        if lat.shape != lng.shape or lat.ndim != 1:
            raise ValueError("lat_deg and lng_deg must be 1-D arrays of the same length")
        t = self._assemble()
        n = len(lat)
        rows = np.empty(n, dtype=np.int32)
        _rows_for_points(lat, lng, self.resolution, self._guard_sin, self._face_table, t["bbox"],
                         t["table_keys"],
                         t["table_rows"], rows)
        near = np.flatnonzero(rows == -2)
        if len(near):
            # Points near an icosahedron face edge: ask H3 itself (rare; see h3grid.py).
            if "cell_rows" not in t:
                t["cell_rows"] = dict(zip(t["cell_ids"].tolist(), t["cell_row_ids"].tolist()))
            cell_rows = t["cell_rows"]
            for p in near:
                cell = h3.str_to_int(h3.latlng_to_cell(float(lat[p]), float(lng[p]),
                                                       self.resolution))
                rows[p] = cell_rows.get(cell, -1)
        offsets = np.zeros(n + 1, dtype=np.int64)
        out = np.empty(max(16, n // 2), dtype=np.int32)
        start, w = 0, 0
        while True:
            start, w = _matches_for_rows(lat, lng, rows, start, t["row_entries"], t["entry_zone"],
                                         t["entry_interior"], t["entry_edge_offsets"],
                                         t["entry_edge_ids"], t["edges"], offsets, out, w)
            if start >= n:
                break
            out = np.concatenate([out, np.empty(len(out) + 16, dtype=np.int32)])
        return Matches(offsets=offsets, zone_slots=out[:w].copy(), zone_ids=t["zone_ids"])

    def zones_at(self, *, lat_deg: float, lng_deg: float, kind: str | None = None) -> list[str]:
        """Sorted ids of the zones containing one point, optionally only of one kind.

        Serviceability at checkout is `zones_at(lat_deg=..., lng_deg=..., kind="delivery")`.
        """
        ids = self.classify(lat_deg=np.array([lat_deg]), lng_deg=np.array([lng_deg])).zones_of(0)
        if kind is not None:
            ids = [z for z in ids if self._prepared[z].zone.kind == kind]
        return ids

    def cover_cells(self, zone_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The zone's H3 cover: uint64 cell indexes and whether each is wholly inside (interior)."""
        cover = self._prepared[zone_id].cover
        return cover.cells.copy(), cover.interior.copy()

    def contains(self, *, zone_id: str, lat_deg: np.ndarray, lng_deg: np.ndarray) -> np.ndarray:
        """Boolean per point: inside or on the boundary of one zone (exact)."""
        if zone_id not in self._prepared:
            raise KeyError(zone_id)
        lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
        lng = np.atleast_1d(np.asarray(lng_deg, dtype=np.float64))
        m = self.classify(lat_deg=lat, lng_deg=lng)
        slot = m.zone_ids.index(zone_id)
        points = np.repeat(np.arange(len(lat)), m.counts())
        out = np.zeros(len(lat), dtype=bool)
        out[points[m.zone_slots == slot]] = True
        return out

    def signed_distance_m(self, *, zone_id: str, lat_deg: np.ndarray | float,
                          lng_deg: np.ndarray | float) -> np.ndarray:
        """Distance to the zone's boundary in metres, negative inside, 0 on the boundary."""
        edges = self._prepared[zone_id].edges
        lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
        lng = np.atleast_1d(np.asarray(lng_deg, dtype=np.float64))
        out = np.empty(len(lat))
        _signed_distance_m(lat, lng, edges, out)
        return out

    def bounds(self, zone_id: str) -> tuple[float, float, float, float]:
        """(min_lng, min_lat, max_lng, max_lat) of a zone."""
        return self._prepared[zone_id].zone.geometry.bounds

    def bounds_array(self) -> tuple[tuple[str, ...], np.ndarray]:
        """Zone ids and an (n, 4) array of their bounds, for cheap candidate filtering."""
        if self._bounds is None:
            ids = self.zone_ids
            b = np.array([self._prepared[z].zone.geometry.bounds for z in ids]) if ids else np.empty((0, 4))
            self._bounds = (ids, b)
        return self._bounds
