"""`serena geofence ...`: classify points against zones from files, without a server.

`classify` reads zones (a GeoJSON FeatureCollection of Polygons/MultiPolygons with
an `id` property) and points (CSV `id,lat,lng`), and writes `id,zones` where zones is
the `;`-joined sorted ids of the zones containing the point (boundary counts as
inside). Bad input ends with one line `error: FILE:LINE: ...` and exit status 1,
never a traceback; large inputs show progress bars on stderr.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Geofences: classify points against zones.")

_PROGRESS_MIN_BYTES = 1_000_000  # ~30k points: below this a bar is noise
_CHUNK = 200_000


def _fail(message: str, *, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def _group() -> None:
    """Geofences: classify points against zones."""


@app.command()
def classify(
    zones: Path = typer.Option(..., "--zones", help="GeoJSON FeatureCollection of zones with an 'id' property."),
    points: Path = typer.Option(..., "--points", help="CSV with header id,lat,lng."),
    out: Path = typer.Option(..., "--out", help="CSV to write: id,zones (';'-joined sorted zone ids)."),
    resolution: int = typer.Option(9, "--resolution", min=0, max=12, help="H3 resolution of the zone cover."),
) -> None:
    """Write, for each point, the sorted ids of the zones that contain it."""
    # Imported here so `serena --help` does not pay for numba/shapely start-up.
    from tqdm import tqdm

    from geofence.io import InputError, iter_points_csv, read_zones_geojson
    from geofence.zones import ZoneError, ZoneIndex

    try:
        zone_list = read_zones_geojson(zones)
        big = points.is_file() and points.stat().st_size >= _PROGRESS_MIN_BYTES
        ids: list[str] = []
        lats: list[float] = []
        lngs: list[float] = []
        with tqdm(desc="reading points", unit=" rows", disable=not big, file=sys.stderr,
                  mininterval=0.5) as bar:
            for _, pid, lat, lng in iter_points_csv(points):
                ids.append(pid)
                lats.append(lat)
                lngs.append(lng)
                bar.update()
        index = ZoneIndex(zone_list, resolution=resolution)
        lat_a = np.array(lats, dtype=np.float64)
        lng_a = np.array(lngs, dtype=np.float64)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle, \
                tqdm(total=len(ids), desc="classifying", unit=" points", disable=not big,
                     file=sys.stderr, mininterval=0.5) as bar:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["id", "zones"])
            for start in range(0, len(ids), _CHUNK):
                stop = min(len(ids), start + _CHUNK)
                matches = index.classify(lat_deg=lat_a[start:stop], lng_deg=lng_a[start:stop])
                writer.writerows(zip(ids[start:stop], matches.joined(";")))
                bar.update(stop - start)
        os.replace(tmp, out)  # never leave a half-written OUT behind
    except InputError as exc:
        _fail(str(exc))
    except ZoneError as exc:  # a zone the reader accepted but the index cannot cover
        _fail(f"{zones}: {exc}")
    except OSError as exc:
        name = exc.filename or out
        if str(name).endswith(".tmp"):
            name = out  # the temporary file is ours; the user asked for OUT
        _fail(f"{name}: {exc.strerror or exc}")
    finally:
        tmp = out.with_name(out.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
