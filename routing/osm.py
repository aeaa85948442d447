"""Read OpenStreetMap data into a flat table of drivable road segments.

This is the only module that knows OSM file formats. It reads `.osm.pbf` (through
pyrosm), OSM XML (`.osm`, `.osm.bz2`, `.osm.gz`, streamed with iterparse) or a
place name (through osmnx, online), keeps the ways that osmnx's "drive" filter
keeps, and returns one row per pair of consecutive way nodes with the direction(s)
it may be driven in. Turning segments into a routable graph is `routing.graph`'s job.
"""

from __future__ import annotations

import bz2
import gzip
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


class OSMError(ValueError):
    """The input could not be read as OSM data, or holds no drivable road."""


@dataclass
class RawNetwork:
    """Drivable segments between OSM nodes; `u`/`v` index the node arrays."""

    node_osm_id: np.ndarray  # int64
    lat: np.ndarray  # float64, degrees
    lng: np.ndarray  # float64, degrees
    u: np.ndarray  # int64 index of the first node (way order)
    v: np.ndarray  # int64 index of the second node
    forward: np.ndarray  # bool: u -> v is allowed
    backward: np.ndarray  # bool: v -> u is allowed
    highway: np.ndarray  # object: OSM highway value
    maxspeed: np.ndarray  # object: OSM maxspeed value or None

    @property
    def n_segments(self) -> int:
        return len(self.u)


# osmnx's "drive" filter, copied from osmnx 2.1 in case its private helper moves.
_DRIVE_FILTER_FALLBACK = (
    '["highway"]["area"!~"yes"]["access"!~"private"]'
    '["highway"!~"abandoned|bridleway|bus_guideway|construction|corridor|cycleway|elevator|'
    "escalator|footway|no|path|pedestrian|planned|platform|proposed|raceway|razed|rest_area|"
    'service|services|steps|track"]["motor_vehicle"!~"no"]["motorcar"!~"no"]'
    '["service"!~"alley|driveway|emergency_access|parking|parking_aisle|private"]'
)

# Tag keys the drive filter and the graph need; everything else is dropped while reading.
_KEYS = ("highway", "area", "access", "motor_vehicle", "motorcar", "service", "oneway", "junction", "maxspeed")

# osmnx's oneway semantics (graph._is_path_one_way / _add_paths).
_ONEWAY = {"yes", "true", "1", "-1", "reverse", "T", "F"}
_REVERSED = {"-1", "reverse", "T"}


def drive_filter() -> list[tuple[str, str, str]]:
    """osmnx's drive filter as (key, op, regex) triples; op is "" (key present), "~" or "!~"."""
    try:
        from osmnx import _overpass

        text = _overpass._get_network_filter("drive")
    except Exception:  # private API: fall back to the copy above rather than fail a build
        text = _DRIVE_FILTER_FALLBACK
    return [(k, op, rx) for k, op, rx in re.findall(r'\["([^"]+)"(?:(!?~)"([^"]*)")?\]', text)]


def apply_drive_filter(tags: pd.DataFrame) -> np.ndarray:
    """Boolean mask of rows whose tags pass the drive filter (Overpass semantics: unanchored regex)."""
    keep = np.ones(len(tags), bool)
    for key, op, rx in drive_filter():
        col = tags[key] if key in tags.columns else pd.Series([None] * len(tags), index=tags.index)
        present = col.notna().to_numpy()
        if op == "":
            keep &= present
            continue
        hit = np.zeros(len(tags), bool)
        if present.any():
            hit[present] = col[present].astype(str).str.contains(rx, regex=True).to_numpy()
        keep &= ~hit if op == "!~" else hit
    return keep


def _directions(oneway: pd.Series, junction: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ow = oneway.astype(object).where(oneway.notna(), None)
    is_oneway = ow.isin(_ONEWAY).to_numpy() | (junction.astype(object) == "roundabout").to_numpy()
    reverse = ow.isin(_REVERSED).to_numpy()
    forward = ~is_oneway | ~reverse
    backward = ~is_oneway | reverse
    return forward, backward


def read(source: str | Path, *, progress: bool = True) -> RawNetwork:
    """Read drivable segments from an OSM file (`.pbf`, `.osm`, `.bz2`, `.gz`) or `place:NAME` (osmnx, online).

    `progress=False` also silences pyrosm's own read bar / timing line (stderr).
    """
    text = str(source)
    if text.startswith("place:"):
        return _read_place(text[len("place:") :])
    path = Path(source)
    if not path.is_file():
        raise OSMError(f"no such OSM file: {path}")
    name = path.name.lower()
    try:
        if name.endswith(".pbf"):
            raw = _read_pbf(path, progress)
        elif name.endswith((".osm", ".osm.bz2", ".osm.gz", ".xml", ".bz2", ".gz")):
            raw = _read_xml(path)
        else:
            raise OSMError(f"unknown OSM format (want .osm.pbf, .osm, .osm.bz2 or .osm.gz): {path}")
    except OSMError:
        raise
    except Exception as exc:  # pyrosm / expat / bz2 raise a zoo of types on corrupt input
        raise OSMError(f"cannot read {path.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if raw.n_segments == 0:
        raise OSMError(f"{path.name} holds no drivable road")
    return raw


def _finish(node_ids: np.ndarray, lat: np.ndarray, lng: np.ndarray, seg: pd.DataFrame) -> RawNetwork:
    """Keep only nodes used by segments and index them 0..n-1."""
    used = np.unique(np.concatenate([seg["u"].to_numpy(np.int64), seg["v"].to_numpy(np.int64)]))
    order = np.argsort(node_ids)
    pos = np.searchsorted(node_ids, used, sorter=order)
    if len(used) and (pos.max() >= len(node_ids) or np.any(node_ids[order[np.minimum(pos, len(order) - 1)]] != used)):
        # Ways referencing nodes missing from the extract (clipped at its border): drop those segments.
        ok_ids = used[(pos < len(node_ids)) & (node_ids[order[np.minimum(pos, len(order) - 1)]] == used)]
        seg = seg[seg["u"].isin(ok_ids) & seg["v"].isin(ok_ids)]
        return _finish(node_ids, lat, lng, seg)
    idx = order[pos]
    u = np.searchsorted(used, seg["u"].to_numpy(np.int64))
    v = np.searchsorted(used, seg["v"].to_numpy(np.int64))
    forward, backward = _directions(seg["oneway"], seg["junction"])
    maxspeed = seg["maxspeed"].astype(object).where(seg["maxspeed"].notna(), None).to_numpy()
    keep = u != v  # a segment from a node to itself carries no distance
    # Two ways drawn over the same nodes (a common OSM duplicate) would give two
    # identical parallel edges: same street, same speed, and ambiguous edge keys.
    # Keep one segment per (node pair, directions, highway), preferring one with a
    # maxspeed tag (duplicates that disagree on it are mapping slips; the tag is information).
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    fw = np.where(u <= v, forward, backward)
    bw = np.where(u <= v, backward, forward)
    ident = pd.DataFrame({"lo": lo, "hi": hi, "fw": fw, "bw": bw, "hw": seg["highway"].astype(str).to_numpy()})
    untagged_first = np.argsort(np.array([m is None for m in maxspeed], bool), kind="stable")
    dup = np.zeros(len(u), bool)
    dup[untagged_first] = ident.iloc[untagged_first].duplicated().to_numpy()
    keep &= ~dup
    return RawNetwork(
        node_osm_id=used,
        lat=np.asarray(lat, np.float64)[idx],
        lng=np.asarray(lng, np.float64)[idx],
        u=u[keep],
        v=v[keep],
        forward=forward[keep],
        backward=backward[keep],
        highway=seg["highway"].astype(object).to_numpy()[keep],
        maxspeed=maxspeed[keep],
    )


def _read_pbf(path: Path, progress: bool = True) -> RawNetwork:
    import pyrosm  # imported here: pulls in geopandas, ~1 s, not needed for XML or cached graphs

    try:
        osm = pyrosm.OSM(str(path), progress=None if progress else False)
    except TypeError:  # pyrosm without the progress argument
        osm = pyrosm.OSM(str(path))
    result = osm.get_network(network_type="driving", nodes=True)
    if result is None or result[1] is None or len(result[1]) == 0:
        raise OSMError(f"{path.name} holds no drivable road")
    nodes, edges = result
    seg = pd.DataFrame({k: edges[k] if k in edges.columns else None for k in _KEYS})
    seg["u"] = edges["u"].to_numpy(np.int64)
    seg["v"] = edges["v"].to_numpy(np.int64)
    # pyrosm keeps tags it has no column for as a JSON string; motorcar=no is one the filter needs.
    if "tags" in edges.columns:
        extra = edges["tags"]
        has = extra.notna() & extra.astype(str).str.contains("motorcar", regex=False)
        for i in np.flatnonzero(has.to_numpy()):
            try:
                seg.iloc[i, seg.columns.get_loc("motorcar")] = json.loads(extra.iloc[i]).get("motorcar")
            except (ValueError, AttributeError):
                pass
    seg = seg[apply_drive_filter(seg)]
    return _finish(nodes["id"].to_numpy(np.int64), nodes["lat"].to_numpy(), nodes["lon"].to_numpy(), seg)


def _open_xml(path: Path):
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_xml(path: Path) -> RawNetwork:
    # Streamed with iterparse rather than osmnx.graph_from_xml: that one builds a
    # networkx graph of every way (no network-type filter) which we would then
    # filter and flatten again; a flat read is simpler and scales to city files.
    node_ids: list[int] = []
    lats: list[float] = []
    lngs: list[float] = []
    way_rows: list[dict] = []
    way_refs: list[list[int]] = []
    with _open_xml(path) as fh:
        for _, elem in ET.iterparse(fh, events=("end",)):
            tag = elem.tag
            if tag == "node":
                node_ids.append(int(elem.get("id")))
                lats.append(float(elem.get("lat")))
                lngs.append(float(elem.get("lon")))
                elem.clear()
            elif tag == "way":
                tags = {t.get("k"): t.get("v") for t in elem.iter("tag")}
                if "highway" in tags:
                    way_rows.append({k: tags.get(k) for k in _KEYS})
                    way_refs.append([int(nd.get("ref")) for nd in elem.iter("nd")])
                elem.clear()
            elif tag == "relation":
                elem.clear()
    if not node_ids:
        raise OSMError(f"{path.name} holds no OSM nodes")
    ways = pd.DataFrame(way_rows, columns=list(_KEYS))
    keep = apply_drive_filter(ways) if len(ways) else np.zeros(0, bool)
    rows, us, vs = [], [], []
    for i in np.flatnonzero(keep):
        refs = way_refs[i]
        for a, b in zip(refs[:-1], refs[1:]):
            rows.append(i)
            us.append(a)
            vs.append(b)
    seg = ways.iloc[rows].reset_index(drop=True)
    seg["u"] = np.asarray(us, np.int64)
    seg["v"] = np.asarray(vs, np.int64)
    ids = np.asarray(node_ids, np.int64)
    return _finish(ids, np.asarray(lats), np.asarray(lngs), seg)


def _read_place(place: str) -> RawNetwork:
    import osmnx as ox

    try:
        g = ox.graph_from_place(place, network_type="drive", simplify=False, retain_all=True)
    except Exception as exc:
        raise OSMError(f"cannot fetch {place!r} through osmnx: {type(exc).__name__}: {exc}") from exc
    node_ids = np.fromiter(g.nodes, np.int64)
    lat = np.array([g.nodes[n]["y"] for n in node_ids])
    lng = np.array([g.nodes[n]["x"] for n in node_ids])
    # osmnx already split two-way streets into u->v and v->u; fold each reciprocal
    # pair back into one two-way segment so simplification sees one segment per street piece.
    rows = {}
    for u, v, data in g.edges(data=True):
        key = (min(u, v), max(u, v), str(data.get("osmid")))
        row = rows.get(key)
        if row is None:
            rows[key] = {
                "u": u, "v": v, "highway": data.get("highway"), "maxspeed": data.get("maxspeed"),
                "oneway": "yes", "junction": None,
            }
        elif row["u"] == v and row["v"] == u:
            row["oneway"] = "no"
    seg = pd.DataFrame(list(rows.values()))
    for col in ("highway", "maxspeed"):
        seg[col] = seg[col].map(lambda x: x[0] if isinstance(x, list) else x)
    return _finish(node_ids, lat, lng, seg)
