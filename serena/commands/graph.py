"""`serena graph`: build a road graph from OSM data and inspect a built one."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Road graphs: build from OSM, inspect.")


@contextlib.contextmanager
def clean_errors():
    """Turn bad-input errors (ValueError family, missing files, permissions) into one line and exit 1."""
    try:
        yield
    except (ValueError, OSError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(1) from None


@app.command()
def build(
    source: str = typer.Argument(..., help="OSM file (.osm.pbf, .osm, .osm.bz2, .osm.gz), place:NAME (online) or 'default' (Helsinki)."),
    out: Path = typer.Option(None, "--out", "-o", help="Directory to write the graph to (default: the graph cache)."),
    country: str = typer.Option(None, "--country", help="Speed profile: ISO country code (PT, FI, DE, FR, US) or default."),
) -> None:
    """Build (or fetch from the cache) a routable graph and print where it is."""
    from routing import graph

    with clean_errors():
        src = graph.default_city_file() if source == "default" else source
        if source == "default":
            country = country or "FI"
        if out is None:
            key = graph.cache_key(src, country=country)
            out = graph.default_cache_dir() / key
            g = graph.load(src, country=country)
        else:
            g = graph.build(src, country=country, out=out)
        d = g.meta.get("dropped", {})
        typer.echo(
            f"{out}: {g.n_nodes} nodes, {g.n_edges} edges, {g.cch.n_arcs} hierarchy arcs; "
            f"dropped {d.get('node_share', 0):.1%} of nodes outside the largest strongly connected component"
        )


@app.command()
def info(
    directory: str = typer.Argument(..., help="A graph directory (or an OSM file, built through the cache)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Nodes, edges, bounding box, what was dropped, and speeds per road class."""
    from routing import graph

    with clean_errors():
        g = graph.load(None if directory == "default" else directory)
        summary = g.info()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    d = summary["dropped"] or {}
    w, s, e, n = summary["bbox"]
    typer.echo(f"source      {summary['source']}  (profile {summary['profile']}, format v{summary['build_version']})")
    typer.echo(f"nodes       {summary['nodes']}")
    typer.echo(f"edges       {summary['edges']}  ({summary['km']} km)")
    typer.echo(f"bbox        {w:.5f},{s:.5f},{e:.5f},{n:.5f}  (lng,lat min, lng,lat max)")
    typer.echo(
        f"dropped     {d.get('node_share', 0):.2%} of nodes, {d.get('edge_share', 0):.2%} of edges "
        f"({d.get('km', 0)} km) outside the largest strongly connected component"
    )
    typer.echo(f"hierarchy   {summary['cch_arcs']} arcs")
    typer.echo("speeds      class            edges       km  median km/h  tagged")
    for name, row in summary["speeds"].items():
        typer.echo(
            f"            {name:<15} {row['edges']:>6} {row['km']:>8} {row['median_kph']:>12} {row['tagged_share']:>7.0%}"
        )
