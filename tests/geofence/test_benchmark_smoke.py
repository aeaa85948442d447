"""The geofence benchmark still runs end to end (tiny sizes; no timing is checked)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "geofence.py"


def test_benchmark_runs_and_reports_zero_mismatches(capsys):
    spec = importlib.util.spec_from_file_location("geofence_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--points", "3000", "--zones", "100", "--drivers", "1", "--fixes", "120",
                        "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classify"]["mismatches"] == 0
    assert report["false_triggers"]["independent noise, position only"]["ours_spurious_pairs"] == 0
    assert report["false_triggers"]["drift correlated over 30 s, with Doppler speed"]["ours_spurious_pairs"] == 0
    assert set(report["real_passes"]) == {"depot_1hz", "dropoff_5s", "depot_1hz_speed", "dropoff_5s_speed"}
