"""`serena commerce ...`: seed a demo shop, run the delivery-event consumer, expire unpaid orders."""

from __future__ import annotations

import asyncio

import typer

from core.settings import SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, help="Commerce: demo shop, event consumer.")


def _settings(database_url: str | None):
    try:
        return load_settings(**({"database_url": database_url} if database_url else {}))
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def seed(products: int = typer.Option(1000, "--products", min=0, help="number of products"),
         lat: float = typer.Option(60.1699, help="city centre latitude (default Helsinki)"),
         lng: float = typer.Option(24.9384, help="city centre longitude"),
         city: str = typer.Option("Helsinki", help="city name used for depots and zones"),
         rng_seed: int = typer.Option(7, "--seed", help="random seed (same seed, same shop)"),
         database_url: str = typer.Option(None, help="defaults to SERENA_DATABASE_URL")) -> None:
    """Create two depots, two delivery zones around LAT,LNG and a catalog of N products (idempotent)."""
    from commerce import seed as seeding

    settings = _settings(database_url)
    result = asyncio.run(seeding.seed(dsn=settings.asyncpg_dsn, products=products, lat=lat, lng=lng, seed=rng_seed, city=city))
    typer.echo(f"depots {result.depot_ids}, zones {', '.join(result.zone_codes)}, {result.categories} categories, "
               f"{result.products} demo products ({result.variants} variants added)")


@app.command()
def reindex(database_url: str = typer.Option(None, help="defaults to SERENA_DATABASE_URL")) -> None:
    """Rebuild the search rows, facet tokens and counts and the word list from the products."""
    from commerce import seed as seeding

    settings = _settings(database_url)
    asyncio.run(seeding.reindex(settings.asyncpg_dsn))
    typer.echo("catalog search index rebuilt")


@app.command()
def expire(card_minutes: int = typer.Option(None, min=1, help="cancel card orders unpaid after this long "
                                                              "(default SERENA_COMMERCE_UNPAID_CARD_S)"),
           bank_transfer_days: int = typer.Option(None, min=1, help="cancel bank-transfer orders unpaid after this long "
                                                                    "(default SERENA_COMMERCE_UNPAID_BANK_TRANSFER_S)"),
           database_url: str = typer.Option(None, help="defaults to SERENA_DATABASE_URL")) -> None:
    """Cancel orders whose payment never arrived and release their stock, now.

    `serena worker` already runs this every SERENA_COMMERCE_EXPIRE_INTERVAL_S (serena.periodic);
    this command is for a run by hand (it ignores the workers' once-per-interval mark).
    """
    from serena import periodic

    settings = _settings(database_url)
    card_s = card_minutes * 60 if card_minutes else settings.commerce_unpaid_card_s
    bank_s = bank_transfer_days * 86400 if bank_transfer_days else settings.commerce_unpaid_bank_transfer_s
    n = asyncio.run(periodic.expire_all(settings, card_after_s=card_s, bank_transfer_after_s=bank_s))
    typer.echo(f"{n} unpaid orders cancelled")


@app.command()
def consume(database_url: str = typer.Option(None, help="defaults to SERENA_DATABASE_URL")) -> None:
    """Run the consumer of delivery.* events (loyalty credit, cash settlement, refunds on failed delivery)."""
    import redis.asyncio as aioredis

    from commerce.orders import events as order_events
    from commerce.payments.provider import StripeProvider
    from core import db as dbmod
    from core.consumer import Consumer

    settings = _settings(database_url)

    async def run() -> None:
        engine = dbmod.make_engine(settings.database_url, pool_size=4)
        redis = aioredis.from_url(settings.redis_url)
        consumer = Consumer(group=order_events.GROUP, db=dbmod.make_sessionmaker(engine), redis=redis,
                            prefix=settings.redis_prefix, types=order_events.CONSUMES,
                            handler=order_events.make_handler(settings=settings, provider=StripeProvider(settings)))
        try:
            await consumer.run()
        finally:
            await redis.aclose()
            await engine.dispose()

    asyncio.run(run())
