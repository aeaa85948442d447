"""Checkout routes: delivery quote for an address, place the order and pay (guest or signed in), refresh after 3-D Secure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from commerce import money
from commerce.checkout import delivery, service
from commerce.checkout.schemas import CheckoutIn, QuoteIn
from commerce.deps import AppSettings, CartToken, Provider
from commerce.orders import service as orders
from commerce.payments import service as payments
from core.rbac import Permission
from serena.deps import Db, Principal, require

router = APIRouter(prefix="/v1/checkout", tags=["checkout"])


@router.post("/quote")
async def quote(body: QuoteIn, request: Request, settings: AppSettings, _=require(Permission.PUBLIC)):
    """Is the address served, from which depot, at what fee, in which windows (422 outside every zone)."""
    # One read on the asyncpg pool (commerce.sql): no session, ping, BEGIN or COMMIT around it.
    q = await delivery.quote(db=request.app.state.pg_pool, settings=settings, lat=body.lat, lng=body.lng,
                             currency=body.currency or settings.commerce_currency, now=datetime.now(UTC))
    return money.plain({
        "zone": {"code": q.zone.code, "name": q.zone.name}, "depot_id": q.depot.id, "fee": q.fee, "currency": q.currency,
        "distance_m": q.distance_m, "distance_source": q.distance_source,
        "windows": [w.as_dict() for w in q.windows],
    })


@router.post("", status_code=201)
async def checkout(body: CheckoutIn, request: Request, settings: AppSettings, provider: Provider,
                   idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
                   x_cart_token: CartToken = None, principal: Principal = require(Permission.PUBLIC)):
    """Place the order and take the payment. Send an Idempotency-Key: a retry with it never charges twice.

    201 with the order (payment_status paid, or action_required with payment.client_secret for
    3-D Secure, or pending for cash/bank transfer); 200 when the key's order already existed;
    402 when the card is declined (the order is cancelled and its stock released).
    """
    req = service.CheckoutRequest(
        checkout_key=idempotency_key or "", email=body.email, name=body.name, phone=body.phone, address_text=body.address,
        lat=body.lat, lng=body.lng, country=body.country, region=body.region, window_start=body.window_start,
        payment_method=body.payment_method, payment_method_id=body.payment_method_id, cart_token=x_cart_token,
        user_id=None if principal.anonymous else principal.user_id, coupon=body.coupon, points=body.points,
        expected_total=body.expected_total)
    result = await service.checkout(sessions=request.app.state.sessions, settings=settings, provider=provider, req=req)
    view = result.view  # read in the transaction that recorded the payment, when there was one
    if view is None:
        async with request.app.state.sessions() as db:
            view = await orders.view(db=db, order=await orders.get(db=db, order_id=result.order.id))
    if result.declined:
        return JSONResponse({"error": "payment_declined", "detail": result.declined, "order": view}, status_code=402)
    return JSONResponse(view, status_code=201 if result.created else 200)


@router.post("/orders/{tracking_token}/refresh-payment")
async def refresh_payment(tracking_token: str, db: Db, provider: Provider, _=require(Permission.PUBLIC)):
    """Ask the provider for the payment's current state (after 3-D Secure); the webhook does the same on its own."""
    order = await orders.by_tracking_token(db=db, token=tracking_token)
    await payments.refresh(db=db, provider=provider, order_id=order.id)
    order = await orders.get(db=db, order_id=order.id)
    return await orders.view(db=db, order=order)
