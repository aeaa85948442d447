"""OSRM (contraction hierarchies, in-process through `osrm-bindings`) as a peer for our benchmarks.

Runs in its own Python 3.12 venv (the wheel needs >= 3.12; the project is on 3.11),
so benchmarks/matrix.py and benchmarks/paths.py call it as a subprocess:

    python matrix_osrm_peer.py DATA.osrm POINTS.json [--pairs N] [--repeat K]

`ensure_peer` (stdlib only, runs under the project's Python) creates that venv under
.cache/osrm/, installs the wheel and runs osrm-extract / osrm-contract (car.lua) once.

POINTS.json is a list of [lat, lng]. Prints one JSON object with the best-of-K
seconds for the full table (durations; durations + distances) and per-route
latencies for the first N consecutive pairs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER_DIR = REPO / ".cache" / "osrm"


class PeerUnavailable(RuntimeError):
    """OSRM could not be installed or prepared here; the benchmark skips it and says why."""


def _python312() -> str:
    candidates = [os.environ.get("SERENA_PY312", "")]
    candidates += [shutil.which(n) or "" for n in ("python3.12", "python3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3.1[2-9]")))
    for exe in filter(None, candidates):
        ok = subprocess.run([exe, "-c", "import sys; assert sys.version_info >= (3, 12)"], capture_output=True)
        if ok.returncode == 0:
            return exe
    raise PeerUnavailable("no Python >= 3.12 found (osrm-bindings needs it); set SERENA_PY312")


def ensure_peer(pbf: Path, log=print) -> tuple[str, str]:
    """(python executable of the peer venv, path of the .osrm data): install and preprocess once, then reuse."""
    venv = PEER_DIR / "venv"
    py = venv / "bin" / "python"
    if not py.is_file() or subprocess.run([py, "-c", "import osrm"], capture_output=True).returncode != 0:
        log("osrm peer: creating a Python 3.12 venv with osrm-bindings (once) ...")
        subprocess.run([_python312(), "-m", "venv", str(venv)], check=True, capture_output=True)
        r = subprocess.run([py, "-m", "pip", "install", "-q", "osrm-bindings"], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise PeerUnavailable("pip install osrm-bindings failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    digest = hashlib.sha256(pbf.read_bytes()).hexdigest()[:16]
    stem = pbf.name.split(".")[0]
    work = PEER_DIR / f"{stem}-{digest}"
    data = work / f"{stem}.osrm"
    if not (work / f"{stem}.osrm.hsgr").is_file():
        log(f"osrm peer: osrm-extract + osrm-contract of {pbf.name} with car.lua (once) ...")
        work.mkdir(parents=True, exist_ok=True)
        link = work / pbf.name
        if not link.exists():
            link.symlink_to(pbf.resolve())  # OSRM writes next to its input; the shared data is read-only
        pkg = subprocess.run([py, "-c", "import osrm, os; print(os.path.dirname(osrm.__file__))"], capture_output=True, text=True).stdout.strip()
        profile = Path(pkg) / "share" / "profiles" / "car.lua"
        for cmd in (["extract", "-p", str(profile), str(link)], ["contract", str(data)]):
            r = subprocess.run([py, "-m", "osrm", *cmd, "-t", "2"], capture_output=True, text=True, cwd=work)
            if r.returncode != 0:
                raise PeerUnavailable(f"osrm-{cmd[0]} failed: " + (r.stdout + r.stderr).strip().splitlines()[-1])
    return str(py), str(data)


def run_peer(py: str, data: str, points, *, pairs: int = 0, repeat: int = 3) -> dict:
    """Run this file under the peer venv on (lat, lng) points; returns its JSON result."""
    tmp = PEER_DIR / "points.json"
    tmp.write_text(json.dumps([[float(a), float(b)] for a, b in points]))
    r = subprocess.run(
        [py, __file__, data, str(tmp), "--pairs", str(pairs), "--repeat", str(repeat)],
        capture_output=True, text=True, timeout=1800,
    )
    if r.returncode != 0:
        raise PeerUnavailable("osrm peer failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    import osrm

    data, points_file = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[sys.argv.index("--pairs") + 1]) if "--pairs" in sys.argv else 0
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
    pts = json.load(open(points_file))
    engine = osrm.OSRM(
        storage_config=data, algorithm="CH", use_shared_memory=False, max_locations_distance_table=100_000
    )
    coords = [(lng, lat) for lat, lng in pts]
    out: dict[str, object] = {"points": len(coords)}
    for label, wanted in (("table_duration_s", ["duration"]), ("table_duration_distance_s", ["duration", "distance"])):
        params = osrm.TableParameters(coordinates=coords, annotations=wanted)
        best, cpu = float("inf"), float("inf")
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            res = engine.Table(params)
            if time.perf_counter() - t < best:
                best, cpu = time.perf_counter() - t, time.process_time() - c
        out[label] = best
        out[label.replace("_s", "_cpu_s")] = cpu
        if label == "table_duration_s":
            durations = res["durations"]
            out["table_sample"] = [[durations[i][j] for j in range(3)] for i in range(3)]
    if pairs:
        lat_ms, cpu_ms = [], []
        for i in range(pairs):
            a, b = coords[i % len(coords)], coords[(i + 1) % len(coords)]
            params = osrm.RouteParameters(coordinates=[a, b], geometries="geojson", overview="full")
            t, c = time.perf_counter(), time.thread_time()
            engine.Route(params)
            lat_ms.append((time.perf_counter() - t) * 1000)
            cpu_ms.append((time.thread_time() - c) * 1000)
        for name, xs in (("route", lat_ms), ("route_cpu", cpu_ms)):
            xs.sort()
            out[f"{name}_p50_ms"] = xs[len(xs) // 2]
            out[f"{name}_p90_ms"] = xs[int(len(xs) * 0.9)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
