"""FastAPI dependencies of the commerce routers: the settings, the payment provider, the cart token header.

Both are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, so
each one cost a thread hand-off per request (a queue put, a condition wake-up, the GIL going
back and forth) for an attribute read; in a py-spy profile of a purchase that was ~10 % of the
API's CPU. `serena.deps.SettingsDep` is the same read through a plain `def`; commerce's routes
use `AppSettings` instead.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from commerce.payments.provider import PaymentProvider, StripeProvider
from core.settings import Settings


async def get_settings(request: Request) -> Settings:
    """The app's settings (what `serena.deps.SettingsDep` gives, without the thread-pool hop)."""
    return request.app.state.settings


async def get_provider(request: Request) -> PaymentProvider:
    """The app's payment provider (Stripe via the SDK, made once per app; tests may put another on app.state)."""
    provider = getattr(request.app.state, "commerce_provider", None)
    if provider is None:
        provider = StripeProvider(request.app.state.settings)
        request.app.state.commerce_provider = provider
    return provider


AppSettings = Annotated[Settings, Depends(get_settings)]
Provider = Annotated[PaymentProvider, Depends(get_provider)]
CartToken = Annotated[str | None, Header(alias="X-Cart-Token", description="A guest cart's token")]
