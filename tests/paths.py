"""Where tests and benchmarks find the shared real-world data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SERENA_SHARED_DATA", REPO.parent / "shared" / "data"))
OSM = SHARED_DATA / "osm"
VRP = SHARED_DATA / "vrp"
