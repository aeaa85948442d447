"""Draw a plan over the road network: a PNG a dispatcher understands at a glance.

Roads in light grey (major classes darker), one colour per van along the road geometry of
its route (`routing.paths.route_via`), the depot as a black square, each stop as a dot in
its van's colour, and a legend with stops, distance and duration per van. Matplotlib with
the Agg backend: no display, no tiles, no network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from routing import paths, speeds
from routing.graph import Graph

MAJOR = {"motorway", "trunk", "primary", "secondary"}


def draw_plan(g: Graph, *, depot: tuple[float, float], stops_latlng: np.ndarray, routes: list[tuple[str, list[int]]],
              out: str | Path, title: str = "") -> Path:
    """Save a PNG of `routes` (vehicle id, indices into `stops_latlng`, in visiting order) starting at `depot`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, ax = plt.subplots(figsize=(11, 11), dpi=110)
    mean_lat = float(np.mean(g.lat))
    aspect = 1 / np.cos(np.radians(mean_lat))
    segs_minor, segs_major = [], []
    major = np.array([speeds.ROAD_CLASSES[c] in MAJOR for c in g.road_class])
    for e in range(g.n_edges):
        a, b = g.geom_indptr[e], g.geom_indptr[e + 1]
        seg = np.column_stack([g.geom_lng[a:b], g.geom_lat[a:b]])
        (segs_major if major[e] else segs_minor).append(seg)
    ax.add_collection(LineCollection(segs_minor, colors="#d9d9d9", linewidths=0.5, zorder=1))
    ax.add_collection(LineCollection(segs_major, colors="#a6a6a6", linewidths=1.0, zorder=1))
    cmap = plt.get_cmap("tab20")
    total_km = 0.0
    for k, (vehicle_id, order) in enumerate(routes):
        if not order:
            continue
        colour = cmap(k % 20)
        waypoints = np.vstack([depot, stops_latlng[order]])
        path = paths.route_via(g, waypoints, max_snap_m=None)
        total_km += path.distance_m / 1000
        ax.plot(path.lng, path.lat, color=colour, linewidth=2.0, alpha=0.9, zorder=3,
                label=f"van {vehicle_id}: {len(order)} stops, {path.distance_m / 1000:.1f} km, {path.time_s / 3600:.1f} h")
        ax.scatter(stops_latlng[order, 1], stops_latlng[order, 0], s=22, color=colour, edgecolors="white", linewidths=0.6, zorder=4)
    ax.scatter([depot[1]], [depot[0]], marker="s", s=140, color="black", zorder=5, label="depot")
    ax.set_aspect(aspect)
    ax.set_xlim(g.lng.min(), g.lng.max())
    ax.set_ylim(g.lat.min(), g.lat.max())
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(routes)} vans, {sum(len(o) for _, o in routes)} stops, {total_km:.0f} km", fontsize=13)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.text(0.0, -0.02, "Road data © OpenStreetMap contributors (ODbL)", transform=ax.transAxes, fontsize=7, color="#666")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out
