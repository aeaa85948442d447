"""`serena route solve`: solve a VRPLIB CVRP/VRPTW instance from the command line.

The JSON form is a contract other tools parse: one object with "instance",
"feasible", "vehicles", "distance" and "routes" (customer numbers as in VRPLIB .sol
files, depot not listed), plus "unassigned" (job, reason) and "time_s". Errors
(missing or corrupt file, zero vehicles, a non-positive limit) print one line on
stderr and exit with status 2 — never a traceback. The `route` group itself lives in
serena/commands/route.py, which calls `register` to add this command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from routing import vrp, vrplib_io


def register(app: typer.Typer) -> None:
    """Add the `solve` command to the `route` Typer group."""
    app.command("solve")(solve_command)


def solve_command(
    instance: Annotated[Path, typer.Argument(help="VRPLIB instance (.vrp), CVRP or VRPTW")],
    time_limit: Annotated[float, typer.Option("--time-limit", help="wall-time limit in seconds (> 0)")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    engine: Annotated[str, typer.Option(help="auto | pyvrp | ortools | hybrid")] = "auto",
    seed: Annotated[int, typer.Option(help="random seed of the search")] = 0,
    rounding: Annotated[str, typer.Option(help="distances: auto | none | nearest")] = "auto",
) -> None:
    """Solve INSTANCE and print the routes (a table, or JSON with --json)."""
    try:
        problem = vrplib_io.read_instance(instance, rounding=rounding)
        solution = vrp.solve(problem, time_limit_s=time_limit, engine=engine, seed=seed)
    except (vrplib_io.InstanceError, vrp.ProblemError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    routes = vrplib_io.routes_as_numbers(solution)
    if as_json:
        out = {
            "instance": problem.name,
            "feasible": solution.feasible,
            "vehicles": len(routes),
            "distance": round(solution.distance_m, 6),
            "routes": routes,
            "unassigned": [{"job": u.job_id, "reason": u.reason} for u in solution.unassigned],
            "time_s": round(solution.wall_time_s, 3),
        }
        typer.echo(json.dumps(out))
        return
    typer.echo(f"{problem.name}: {len(routes)} vehicles, distance {solution.distance_m:.3f}, "
               f"{'feasible' if solution.feasible else 'NOT all jobs served'} "
               f"({solution.engine}, {solution.wall_time_s:.2f} s)")
    typer.echo(f"{'route':>5}  {'stops':>5}  {'distance':>10}  customers")
    for k, route in enumerate(solution.routes, 1):
        ids = " ".join(v.job_id for v in route.visits)
        typer.echo(f"{k:>5}  {len(route.visits):>5}  {route.distance_m:>10.3f}  {ids}")
    for u in solution.unassigned:
        typer.echo(f"unassigned {u.job_id}: {u.reason}")
