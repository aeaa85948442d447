"""`serena route solve` on real VRPLIB files: the JSON contract and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
import vrplib
from typer.testing import CliRunner

from serena.commands import route_solve
from tests.paths import VRP

C101 = VRP / "solomon" / "C101.vrp"
X101 = VRP / "cvrp" / "X-n101-k25.vrp"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    # Until serena/commands/route.py mounts it, test the command on a local group.
    group = typer.Typer()

    @group.callback()
    def _route() -> None:
        """route"""

    route_solve.register(group)
    return group


def run(app, *args):
    return CliRunner().invoke(app, ["solve", *map(str, args)])


def test_json_output_on_c101_matches_the_contract(app):
    result = run(app, C101, "--time-limit", "0.5", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"instance", "feasible", "vehicles", "distance", "routes"} <= out.keys()
    assert out["instance"] == "C101" and out["feasible"] is True
    assert out["vehicles"] == len(out["routes"]) <= 25
    assert sorted(c for r in out["routes"] for c in r) == list(range(1, 101))
    # The distance is the unrounded Euclidean length of the listed routes.
    data = vrplib.read_instance(str(C101))
    w = data["edge_weight"]
    total = sum(w[a, b] for r in out["routes"] for a, b in zip([0, *r], [*r, 0]))
    assert out["distance"] == pytest.approx(total, rel=1e-9)
    assert out["distance"] < 828.937 * 1.05  # best known 828.937: a sanity bound, not a benchmark


def test_cvrp_instances_are_read_too(app):
    result = run(app, X101, "--time-limit", "0.5", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["feasible"] and sorted(c for r in out["routes"] for c in r) == list(range(1, 101))
    assert float(out["distance"]).is_integer()  # CVRPLIB convention: rounded arc lengths


def test_table_output_lists_every_route(app):
    result = run(app, C101, "--time-limit", "0.3")
    assert result.exit_code == 0
    assert "C101:" in result.stdout and "feasible" in result.stdout
    assert len([ln for ln in result.stdout.splitlines() if ln.strip()[:1].isdigit()]) >= 10


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.vrp", "no such file"),
        (lambda tmp: _write(tmp, "garbage.vrp", "this is not\x00 a VRPLIB file\n:::\n"), "not a readable VRPLIB"),
        (lambda tmp: _write(tmp, "truncated.vrp", C101.read_text()[:400]), "instance"),
        (lambda tmp: _write(tmp, "nofleet.vrp", C101.read_text().replace("VEHICLES : 25", "VEHICLES : 0")), "no vehicles"),
    ],
)
def test_bad_files_give_one_clear_error_line(app, tmp_path, make, message):
    result = run(app, make(tmp_path), "--time-limit", "0.2", "--json")
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("limit", ["0", "-1", "nan"])
def test_a_non_positive_time_limit_is_refused(app, limit):
    result = run(app, C101, "--time-limit", limit, "--json")
    assert result.exit_code == 2
    assert "time limit" in result.stderr


def test_impossible_time_windows_come_back_as_unassigned_with_a_reason(app, tmp_path):
    text = C101.read_text()
    lines = text.splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("TIME_WINDOW_SECTION")))
    # Customer 5 (node 6): a window that closes before it opens.
    node, *_ = lines[start + 6].split()
    lines[start + 6] = f"{node} 500 100"
    path = _write(tmp_path, "badtw.vrp", "\n".join(lines) + "\n")
    result = run(app, path, "--time-limit", "0.3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["feasible"] is False
    assert out["unassigned"] == [{"job": "5", "reason": "delivery time window [500, 100] ends before it starts"}]
    assert 5 not in {c for r in out["routes"] for c in r}


def _write(tmp, name: str, text: str):
    path = tmp / name
    path.write_text(text)
    return path


def test_numpy_is_not_needed_to_parse_the_output(app):
    # Guard against numpy scalars leaking into the JSON (json.dumps would fail or
    # print "np.float64(...)").
    out = json.loads(run(app, C101, "--time-limit", "0.2", "--json").stdout)
    assert all(type(c) is int for r in out["routes"] for c in r)
    assert not isinstance(out["distance"], np.floating)


def test_the_command_is_mounted_under_serena_route():
    from serena import cli

    assert any(g.name == "route" for g in cli.app.registered_groups), "serena route is not mounted"
    result = CliRunner().invoke(cli.app, ["route", "solve", str(C101), "--time-limit", "0.3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["instance"] == "C101"
