"""Point-to-point path and weight-update benchmark: latency percentiles, ours against scipy and OSRM.

    .venv/bin/python -m benchmarks.paths                 # Porto, 1000 paths
    .venv/bin/python -m benchmarks.paths --osm monaco --pairs 300 --no-peer

`paths.route` is timed end to end (snap both points, CCH query, unpack, geometry
with every OSM vertex). Also timed: the bare CCH query, scipy's Dijkstra for one
pair (a full single-source run: scipy has no early exit for one target), OSRM's
Route with full GeoJSON geometry, and re-customisation after weight changes
(per-class speed factors; 1 % of edges given new times, as learned speeds would).
CPU columns use the calling thread's CPU time, which a busy machine does not inflate.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.matrix import _csr, best_of_cpu, load_graph, osm_file, random_points
from routing import ch, matrix, paths, snap


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--osm", default="porto")
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--scipy-pairs", type=int, default=30)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args(argv)
    pbf = osm_file(args.osm)
    g, _, _ = load_graph(pbf)
    n = args.pairs
    pts = random_points(g, n + 1, seed=7)
    print(f"# path benchmark: {pbf.name}, {n} paths between random addresses ({g.n_nodes} nodes)")
    _ = g.metric  # customise before timing
    snap.snap(g, pts[:2, 0], pts[:2, 1])
    paths.route(g, tuple(pts[0]), tuple(pts[1]))  # warm-up: k-d tree, JIT

    ours_ms, ours_cpu_ms, query_ms, lengths = [], [], [], []
    pos = snap.snap(g, pts[:, 0], pts[:, 1])
    sn, st, sd = matrix.source_seeds(g, pos)
    tn, tt, td = matrix.target_seeds(g, pos)
    m, c = g.metric, g.cch
    for i in range(n):
        t, cpu = time.perf_counter(), time.thread_time()
        p = paths.route(g, tuple(pts[i]), tuple(pts[i + 1]))
        ours_ms.append((time.perf_counter() - t) * 1000)
        ours_cpu_ms.append((time.thread_time() - cpu) * 1000)
        lengths.append(len(p.lat))
        t = time.perf_counter()
        ch.point_to_point(
            c.up_indptr, c.up_head, c.parent, m.up_time, m.up_dist, m.down_time, m.down_dist,
            sn[i], st[i], sd[i], tn[i + 1], tt[i + 1], td[i + 1],
        )
        query_ms.append((time.perf_counter() - t) * 1000)

    from scipy.sparse.csgraph import dijkstra

    a = _csr(g)
    scipy_ms = []
    for i in range(min(args.scipy_pairs, n)):
        t = time.perf_counter()
        dijkstra(a, indices=int(g.tail[pos.edge[i]]))
        scipy_ms.append((time.perf_counter() - t) * 1000)

    rng = np.random.default_rng(1)
    edges = rng.choice(g.n_edges, max(1, g.n_edges // 100), replace=False)
    factors = best_of_cpu(lambda: g.with_speed_factors({"primary": 0.6, "secondary": 0.7, "tertiary": 0.8}), 5)
    update = best_of_cpu(lambda: g.update_weights(edges, g.time_s[edges] * 1.5), 5)

    peer, note = None, ""
    if not args.no_peer:
        sys.path.insert(0, str(Path(__file__).parent))
        from matrix_osrm_peer import PeerUnavailable, ensure_peer, run_peer

        try:
            py, data = ensure_peer(pbf)
            peer = run_peer(py, data, pts, pairs=n, repeat=1)
        except (PeerUnavailable, OSError, subprocess.SubprocessError) as exc:
            note = f"OSRM skipped: {exc}"

    print()
    print("| what | p50 ms | p90 ms | CPU p50 ms | CPU p90 ms | p50 vs ours |")
    print("|---|---:|---:|---:|---:|---:|")
    o50 = pct(ours_ms, 50)
    print(
        f"| ours: route() end to end (snap, query, unpack, geometry) | {o50:.3f} | {pct(ours_ms, 90):.3f} | "
        f"{pct(ours_cpu_ms, 50):.3f} | {pct(ours_cpu_ms, 90):.3f} | 1.00 |"
    )
    print(f"| ours: CCH query only | {pct(query_ms, 50):.3f} | {pct(query_ms, 90):.3f} | | | |")
    print(
        f"| scipy dijkstra, one source ({len(scipy_ms)} runs) | {pct(scipy_ms, 50):.2f} | {pct(scipy_ms, 90):.2f} "
        f"| | | {pct(scipy_ms, 50) / o50:.0f}x |"
    )
    if peer:
        print(
            f"| OSRM CH Route, full geometry | {peer['route_p50_ms']:.3f} | {peer['route_p90_ms']:.3f} | "
            f"{peer['route_cpu_p50_ms']:.3f} | {peer['route_cpu_p90_ms']:.3f} | {peer['route_p50_ms'] / o50:.2f}x |"
        )
    else:
        print(f"| OSRM | - | - | | | {note or 'skipped (--no-peer)'} |")
    print()
    print(f"median geometry: {int(np.median(lengths))} vertices per path")
    print(f"re-customise, speed factors for 3 road classes: {factors[0] * 1000:.1f} ms wall, {factors[1] * 1000:.1f} ms CPU")
    print(f"re-customise, new times on {len(edges)} edges (1 %): {update[0] * 1000:.1f} ms wall, {update[1] * 1000:.1f} ms CPU")


if __name__ == "__main__":
    main()
