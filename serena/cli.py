"""The `serena` command line: one Typer app that mounts each room's commands.

Each command group lives in its own module under `serena/commands/` and exposes a
Typer app named `app`; this module only wires them together, so a group can be
added without touching the others.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Serena delivery platform.")

# (module under serena.commands, command group name)
_GROUPS = [
    ("platform", None),  # top-level commands: up, migrate, version
    ("services", "services"),
    ("audit", "audit"),
    ("graph", "graph"),
    ("route", "route"),
    ("geofence", "geofence"),
    ("ingest", "ingest"),
    ("events", "events"),
    ("planner", "planner"),
    ("users", "users"),
    ("commerce", "commerce"),
    ("worker", None),  # worker: Celery + the notifications consumer
    ("simulate", None),  # simulate, load
]


def _mount() -> None:
    for module_name, group in _GROUPS:
        try:
            module = importlib.import_module(f"serena.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"serena.commands.{module_name}":
                continue  # group not written yet
            raise
        if group is None:
            for command in module.app.registered_commands:
                app.registered_commands.append(command)
        else:
            app.add_typer(module.app, name=group)


_mount()


def main() -> None:
    """Entry point of the console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
