"""`serena route plan-map`: a seeded delivery day solved on real roads and drawn to a PNG."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from routing import graph, scenario, vrp
from tests.paths import OSM


def test_delivery_day_on_monaco_uses_road_times_and_serves_everyone(tmp_path):
    g = graph.load(OSM / "monaco.osm.pbf", cache_dir=tmp_path / "cache", progress=False)
    sc = scenario.delivery_day(g, deliveries=30, vans=4, seed=3)
    assert sc.problem.duration_s.shape == (31, 31)
    assert np.all(np.isfinite(sc.problem.duration_s)) and np.all(np.diag(sc.problem.duration_s) == 0)
    solution = vrp.solve(sc.problem, time_limit_s=1.0)
    assert solution.unassigned == []
    assert sorted(v.job_id for r in solution.routes for v in r.visits) == sorted(f"d{i}" for i in range(30))


def test_plan_map_command_writes_a_png(tmp_path):
    out = tmp_path / "routes.png"
    r = subprocess.run([sys.executable, "-m", "serena.cli", "route", "plan-map", str(OSM / "monaco.osm.pbf"),
                        "--deliveries", "25", "--vans", "3", "--time-limit", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "SERENA_GRAPH_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "25 deliveries" in r.stdout and "0 unassigned" in r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_map_refuses_an_unreadable_file(tmp_path):
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(b"not a pbf")
    r = subprocess.run([sys.executable, "-m", "serena.cli", "route", "plan-map", str(bad), "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=120)
    last = r.stderr.strip().splitlines()[-1]  # after the progress bar
    assert r.returncode == 1 and last.startswith("error:") and "PBF" in last and "Traceback" not in r.stderr
