"""Cart routes: guests hold a cart by its token (X-Cart-Token); a signed-in customer's cart follows the account."""

from __future__ import annotations

from fastapi import APIRouter, Request

from commerce import money
from commerce.cart import service
from commerce.cart.schemas import CartCreate, LineSet, Merge
from commerce.deps import AppSettings, CartToken
from core.rbac import Permission
from serena.deps import Db, Principal, require

router = APIRouter(prefix="/v1/cart", tags=["cart"])


def _user(principal: Principal):
    return principal.user_id if not principal.anonymous else None


@router.post("", status_code=201)
async def create(body: CartCreate, request: Request, db: Db, settings: AppSettings,
                 principal: Principal = require(Permission.PUBLIC)):
    """A new guest cart (or the signed-in customer's cart); keep `token` and send it as X-Cart-Token."""
    cur = money.check_currency(body.currency or settings.commerce_currency)
    if principal.anonymous:
        # One INSERT on the asyncpg pool (commerce.sql: no session, ping, BEGIN or COMMIT), and a new cart
        # has no lines: its view needs no query.
        return money.plain(service.empty_view(await service.create_guest(db=request.app.state.pg_pool, currency=cur)))
    cart = await service.for_user(db=db, user_id=principal.user_id, currency=cur)
    return money.plain(await service.view(db=db, cart=cart))


@router.get("")
async def show(db: Db, settings: AppSettings, x_cart_token: CartToken = None,
               principal: Principal = require(Permission.PUBLIC)):
    """The cart priced now."""
    cart = await service.resolve(db=db, user_id=_user(principal), token=x_cart_token, currency=settings.commerce_currency,
                                 create_missing=False)
    return money.plain(await service.view(db=db, cart=cart))


@router.put("/lines/{variant_id}")
async def set_line(variant_id: int, body: LineSet, request: Request, db: Db, settings: AppSettings,
                   x_cart_token: CartToken = None, principal: Principal = require(Permission.PUBLIC)):
    """Set a line's quantity (0 removes it)."""
    if principal.anonymous and x_cart_token:
        # A guest's cart: three single statements on one asyncpg connection (commerce.sql), each atomic on
        # its own; one acquire, so a busy pool is queued for once, not three times.
        async with request.app.state.pg_pool.acquire() as conn:
            cart = await service.guest_by_token(db=conn, token=x_cart_token)
            await service.set_line(db=conn, cart=cart, variant_id=variant_id, quantity=body.quantity)
            return money.plain(await service.view(db=conn, cart=cart))
    cart = await service.resolve(db=db, user_id=_user(principal), token=x_cart_token, currency=settings.commerce_currency,
                                 create_missing=False)
    await service.set_line(db=db, cart=cart, variant_id=variant_id, quantity=body.quantity)
    return money.plain(await service.view(db=db, cart=cart))


@router.post("/merge")
async def merge(body: Merge, db: Db, principal: Principal = require(Permission.ORDERS_OWN)):
    """Fold the guest cart into the signed-in customer's cart (call right after sign-in)."""
    cart = await service.merge(db=db, user_id=principal.user_id, guest_token=body.guest_token)
    return money.plain(await service.view(db=db, cart=cart))
