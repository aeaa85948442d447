"""All commerce HTTP routes, mounted by serena.app with one include."""

from __future__ import annotations

from fastapi import APIRouter

from commerce.cart import api as cart_api
from commerce.catalog import api as catalog_api
from commerce.checkout import api as checkout_api
from commerce.loyalty import api as loyalty_api
from commerce.orders import api as orders_api
from commerce.payments import api as payments_api
from commerce.promotions import api as promotions_api

router = APIRouter()
for sub in (catalog_api, cart_api, checkout_api, payments_api, orders_api, promotions_api, loyalty_api):
    router.include_router(sub.router)
