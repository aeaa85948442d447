"""`serena route`: travel-time matrices and point-to-point paths on a road graph."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import typer

from serena.commands.graph import clean_errors

app = typer.Typer(no_args_is_help=True, help="Routing: matrices, paths (and VRP solving).")

GRAPH_HELP = "Graph directory, OSM file (built through the cache) or 'default' (Helsinki)."


def _load_graph(source: str):
    from routing import graph

    return graph.load(None if source == "default" else source)


def read_points(path: Path) -> tuple[list[str], np.ndarray]:
    """ids and an (n, 2) lat/lng array from a CSV with columns id, lat, lng (header required)."""
    if not path.is_file():
        raise ValueError(f"no such points file: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
        missing = [c for c in ("id", "lat", "lng") if c not in fields]
        if missing:
            raise ValueError(f"{path.name}: missing column(s) {', '.join(missing)} (want id,lat,lng)")
        ids, coords = [], []
        for line, row in enumerate(reader, start=2):
            try:
                coords.append((float(row[fields["lat"]]), float(row[fields["lng"]])))
            except (TypeError, ValueError):
                raise ValueError(f"{path.name} line {line}: lat/lng are not numbers") from None
            ids.append(row[fields["id"]].strip())
    if not ids:
        raise ValueError(f"{path.name}: no points")
    return ids, np.asarray(coords, np.float64)


def _parse_latlng(text: str, what: str) -> tuple[float, float]:
    try:
        lat, lng = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{what} must be LAT,LNG, got {text!r}") from None
    return lat, lng


@app.command()
def matrix(
    graph_source: str = typer.Argument(..., metavar="GRAPH", help=GRAPH_HELP),
    points: Path = typer.Argument(..., help="CSV with columns id,lat,lng (sources, and targets unless --targets)."),
    targets: Path = typer.Option(None, "--targets", help="CSV of targets (default: the same points)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (.csv or .json); default: CSV on stdout."),
    fmt: str = typer.Option(None, "--format", help="csv or json (default: from --out's suffix, else csv)."),
    max_snap_m: float = typer.Option(500.0, "--max-snap-m", help="Refuse points farther than this from a road."),
    distances: bool = typer.Option(True, "--distances/--no-distances", help="Also compute distances of the fastest paths."),
) -> None:
    """Exact travel-time (s) and distance (m) matrix between points."""
    from routing import matrix as matrix_mod

    with clean_errors():
        fmt = (fmt or (out.suffix.lstrip(".") if out is not None else "csv")).lower()
        if fmt not in {"csv", "json"}:
            raise ValueError(f"unknown format {fmt!r} (csv or json)")
        src_ids, src = read_points(points)
        dst_ids, dst = read_points(targets) if targets is not None else (src_ids, None)
        g = _load_graph(graph_source)
        m = matrix_mod.travel_matrix(g, src, dst, max_snap_m=max_snap_m, distances=distances)
        fh = open(out, "wb") if out is not None else sys.stdout.buffer
        try:
            if fmt == "json":
                head = {
                    "sources": src_ids,
                    "targets": dst_ids,
                    "snap_distance_m": {
                        "sources": np.round(m.sources.distance_m, 1).tolist(),
                        "targets": np.round(m.targets.distance_m, 1).tolist(),
                    },
                }
                fh.write(json.dumps(head)[:-1].encode())
                fh.write(b', "time_s": ' + matrix_mod.json_array(m.time_s, 3))
                if m.distance_m is not None:
                    fh.write(b', "distance_m": ' + matrix_mod.json_array(m.distance_m, 1))
                fh.write(b"}\n")
            else:
                matrix_mod.write_csv(m, fh, src_ids, dst_ids)
            fh.flush()
        finally:
            if out is not None:
                fh.close()
    if out is not None:
        typer.echo(f"{out}: {len(src_ids)}x{len(dst_ids)} matrix", err=True)


@app.command()
def path(
    graph_source: str = typer.Argument(..., metavar="GRAPH", help=GRAPH_HELP),
    origin: str = typer.Option(..., "--from", help="Origin as LAT,LNG."),
    destination: str = typer.Option(..., "--to", help="Destination as LAT,LNG."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the GeoJSON here (default: stdout)."),
    max_snap_m: float = typer.Option(500.0, "--max-snap-m", help="Refuse points farther than this from a road."),
) -> None:
    """Fastest path as a GeoJSON Feature (LineString with time_s and distance_m)."""
    from routing import paths

    with clean_errors():
        a = _parse_latlng(origin, "--from")
        b = _parse_latlng(destination, "--to")
        g = _load_graph(graph_source)
        p = paths.route(g, a, b, max_snap_m=max_snap_m)
        text = json.dumps(p.to_geojson())
        if out is not None:
            out.write_text(text + "\n")
            typer.echo(f"{out}: {p.distance_m:.0f} m, {p.time_s:.0f} s", err=True)
        else:
            typer.echo(text)


# The VRP room adds `serena route solve` from its own module.
try:
    from serena.commands import route_solve

    route_solve.register(app)
except ModuleNotFoundError as exc:
    if exc.name != "serena.commands.route_solve":
        raise


@app.command("plan-map")
def plan_map(
    source: str = typer.Argument("default", help="OSM file, graph dir, or 'default' (bundled Helsinki)"),
    deliveries: int = typer.Option(200, min=1, max=5000),
    vans: int = typer.Option(20, min=1, max=500),
    time_limit: float = typer.Option(10.0, "--time-limit", min=0.01, help="solver budget, seconds"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("routes.png"), help="PNG to write"),
) -> None:
    """Solve a seeded delivery day on real roads and draw the routes over the road network."""
    from routing import graph as graphmod
    from routing import plot, scenario, vrp

    try:
        g = graphmod.default_city() if source == "default" else graphmod.load(source)
        sc = scenario.delivery_day(g, deliveries=deliveries, vans=vans, seed=seed)
        solution = vrp.solve(sc.problem, time_limit_s=time_limit)
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    routes = [(r.vehicle_id, [int(v.job_id[1:]) for v in r.visits]) for r in solution.routes if r.visits]
    title = (f"{deliveries} deliveries, {solution.vehicles_used} of {vans} vans, {solution.distance_m / 1000:.0f} km on roads, "
             f"{len(solution.unassigned)} unassigned ({solution.engine}, {solution.wall_time_s:.1f} s)")
    plot.draw_plan(g, depot=sc.depot, stops_latlng=sc.stops_latlng, routes=routes, out=out, title=title)
    typer.echo(title)
    for u in solution.unassigned:
        typer.echo(f"unassigned {u.job_id}: {u.reason}")
    typer.echo(f"wrote {out}")
