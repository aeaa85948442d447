"""`serena services up|status|down|broker-config`: the infrastructure under the platform (see serena.services)."""

from __future__ import annotations

from pathlib import Path

import typer

from core.settings import SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, help="PostgreSQL/PostGIS, Redis, our Mosquitto and localstripe.")


def _settings(**overrides):
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _report(results) -> int:
    from serena.services import ServiceStatus

    for st in results:
        typer.echo(ServiceStatus.line(st))
    down = [st for st in results if not st.up]
    for st in down:
        if st.fix:
            typer.echo(f"\n{st.name} is down; to bring it up run:", err=True)
            for cmd in st.fix:
                typer.echo(f"  {cmd}", err=True)
    return 1 if down else 0


@app.command()
def up(
    install: bool = typer.Option(None, "--install/--no-install", help="apt-get install what is missing (default: when root on Debian)"),
) -> None:
    """Use the services at the configured URLs; start (and install) on loopback what does not answer."""
    from serena import services

    settings = _settings()
    raise typer.Exit(_report(services.up(settings=settings, install=install, echo=typer.echo)))


@app.command()
def status() -> None:
    """One line per service: URL, up/DOWN, version, details. Exit 1 if any is down."""
    from serena import services

    raise typer.Exit(_report(services.status(settings=_settings())))


@app.command()
def down() -> None:
    """Stop what `serena services up` started (pid files); never the machine's own services."""
    from serena import services

    services.down(settings=_settings(), echo=typer.echo)


@app.command("broker-config")
def broker_config(
    out: Path = typer.Option(None, "--out", help="directory for mosquitto.conf, passwd and acl (default SERENA_MOSQUITTO_DIR)"),
    reload: bool = typer.Option(True, "--reload/--no-reload", help="SIGHUP our running broker afterwards"),
) -> None:
    """Render our Mosquitto config, password file and ACL from the drivers table (and reload our broker)."""
    from serena import services

    settings = _settings(**({"mosquitto_dir": out} if out else {}))
    services.write_broker_config(settings, reload=reload, echo=typer.echo)
