"""FastAPI dependencies of the commerce routers: the payment provider, the cart token header."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from commerce.payments.provider import PaymentProvider, StripeProvider


def get_provider(request: Request) -> PaymentProvider:
    """The app's payment provider (Stripe via the SDK, made once per app; tests may put another on app.state)."""
    provider = getattr(request.app.state, "commerce_provider", None)
    if provider is None:
        provider = StripeProvider(request.app.state.settings)
        request.app.state.commerce_provider = provider
    return provider


Provider = Annotated[PaymentProvider, Depends(get_provider)]
CartToken = Annotated[str | None, Header(alias="X-Cart-Token", description="A guest cart's token")]
