"""`serena users create-admin`: the first staff account, with its TOTP second factor enrolled."""

from __future__ import annotations

import asyncio

import typer

app = typer.Typer(no_args_is_help=True, help="User accounts.")


@app.command("create-admin")
def create_admin(
    email: str = typer.Option(..., help="the admin's e-mail (sign-in name)"),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                 help="at least 10 characters; prompted when not given"),
    totp_secret: str = typer.Option("", help="base32 TOTP secret to enrol (default: a new random one)"),
) -> None:
    """Create an admin (idempotent: an existing account is left as it is) and print its TOTP enrolment."""
    import pyotp
    from sqlalchemy import select

    from core import auth, db as dbmod, identity
    from core.errors import SerenaError
    from core.models import User
    from core.rbac import Role
    from serena.commands.platform import settings_or_exit

    settings = settings_or_exit()

    async def run() -> tuple[bool, str]:
        engine = dbmod.make_engine(settings.database_url)
        try:
            async with dbmod.make_sessionmaker(engine)() as db, db.begin():
                existing = (await db.execute(select(User).where(User.email == email.strip().lower()))).scalar()
                if existing is not None:
                    return False, existing.totp_secret or ""
                user = await identity.create_user(db=db, email=email, password=password, full_name="Administrator",
                                                  roles={Role.ADMIN})
                user.totp_secret = totp_secret or auth.new_totp_secret()
                return True, user.totp_secret
        finally:
            await engine.dispose()

    try:
        created, secret = asyncio.run(run())
    except SerenaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not created:
        typer.echo(f"{email}: already exists (left unchanged)")
        return
    typer.echo(f"admin {email} created; TOTP is required at sign-in for staff.")
    typer.echo(f"TOTP secret (add to an authenticator app): {secret}")
    typer.echo(f"otpauth URI: {pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name='Serena')}")
