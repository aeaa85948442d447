"""`serena audit verify`: recompute the audit log's hash chain and report the first broken link."""

from __future__ import annotations

import asyncio

import asyncpg
import typer

from core import audit
from core.settings import SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, help="Audit log tools.")


@app.command()
def verify(database_url: str = typer.Option(None, help="defaults to SERENA_DATABASE_URL")) -> None:
    """Check every entry's hash and link; exit 1 at the first tampered row."""
    try:
        settings = load_settings(**({"database_url": database_url} if database_url else {}))
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def run() -> audit.ChainReport:
        conn = await asyncpg.connect(settings.asyncpg_dsn, timeout=5)
        try:
            return await audit.verify_chain(conn)
        finally:
            await conn.close()

    try:
        report = asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"error: SERENA_DATABASE_URL: cannot read the audit log: {exc}", err=True)
        raise typer.Exit(2) from None
    if report.ok:
        typer.echo(f"audit chain ok: {report.entries} entries verified")
        return
    typer.echo(f"audit chain BROKEN at entry {report.first_bad_id}: {report.reason} ({report.entries} entries before it are intact)", err=True)
    raise typer.Exit(1)
