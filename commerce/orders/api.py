"""Order routes: a customer's own orders, the guest tracking link, and support's actions (audited)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

from commerce.deps import Provider
from commerce.orders import service
from commerce.orders.models import Order, OrderReturn
from commerce.orders.schemas import BankTransferIn, CancelIn, RefundIn, ReturnIn, ReturnStep
from core.errors import NotFound, ValidationFailed
from core.models import User
from core.rbac import Permission
from serena.deps import Db, Principal, require

router = APIRouter(tags=["orders"])


async def _own(db, principal: Principal, order_id: uuid.UUID, lock: bool = False) -> Order:
    order = await service.get(db=db, order_id=order_id, lock=lock)
    if order.user_id != principal.user_id:
        raise NotFound(f"order {order_id} not found")  # 404, not 403: do not confirm other people's order ids
    return order


async def _actor(db, principal: Principal) -> dict:
    user = await db.get(User, principal.user_id)
    return {"id": principal.user_id, "email": user.email if user else ""}


def _pdf(order: Order, lines) -> Response:
    return Response(service.invoice_pdf(order=order, order_lines=lines), media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{order.invoice_number}.pdf"'})


@router.get("/v1/orders")
async def my_orders(db: Db, principal: Principal = require(Permission.ORDERS_OWN)):
    """The signed-in customer's order history, newest first."""
    return [await service.view(db=db, order=o, with_timeline=False)
            for o in await service.history(db=db, user_id=principal.user_id)]


@router.get("/v1/orders/{order_id}")
async def my_order(order_id: uuid.UUID, db: Db, principal: Principal = require(Permission.ORDERS_OWN)):
    """One of the customer's orders with its timeline."""
    return await service.view(db=db, order=await _own(db, principal, order_id))


@router.get("/v1/orders/{order_id}/invoice.pdf")
async def my_invoice(order_id: uuid.UUID, db: Db, principal: Principal = require(Permission.ORDERS_OWN)):
    order = await _own(db, principal, order_id)
    return _pdf(order, await service.lines(db=db, order_id=order.id))


@router.post("/v1/orders/{order_id}/cancel")
async def cancel_mine(order_id: uuid.UUID, body: CancelIn, db: Db, provider: Provider,
                      principal: Principal = require(Permission.ORDERS_OWN)):
    """Cancel before pickup (refunds what was charged)."""
    order = await _own(db, principal, order_id, lock=True)
    await service.cancel(db=db, provider=provider, order=order, reason=body.reason)
    return await service.view(db=db, order=order)


@router.post("/v1/orders/{order_id}/returns", status_code=201)
async def request_return(order_id: uuid.UUID, body: ReturnIn, db: Db, principal: Principal = require(Permission.ORDERS_OWN)):
    """Ask to return or exchange delivered items."""
    order = await _own(db, principal, order_id, lock=True)
    ret = await service.request_return(db=db, order=order, kind=body.kind,
                                       items=[i.model_dump(exclude_none=True) for i in body.items], reason=body.reason)
    return {"id": ret.id, "kind": ret.kind, "status": ret.status}


@router.get("/v1/track/{token}")
async def track(token: str, db: Db, _=require(Permission.PUBLIC)):
    """The order behind a tracking link (the link's token is the guest's proof of ownership)."""
    return await service.view(db=db, order=await service.by_tracking_token(db=db, token=token))


@router.get("/v1/track/{token}/invoice.pdf")
async def track_invoice(token: str, db: Db, _=require(Permission.PUBLIC)):
    order = await service.by_tracking_token(db=db, token=token)
    return _pdf(order, await service.lines(db=db, order_id=order.id))


@router.post("/v1/track/{token}/cancel")
async def track_cancel(token: str, body: CancelIn, db: Db, provider: Provider, _=require(Permission.PUBLIC)):
    """A guest cancels through the tracking link (before pickup)."""
    order = await service.by_tracking_token(db=db, token=token)
    order = await service.get(db=db, order_id=order.id, lock=True)
    await service.cancel(db=db, provider=provider, order=order, reason=body.reason)
    return await service.view(db=db, order=order)


@router.get("/v1/staff/orders/{order_id}")
async def staff_order(order_id: uuid.UUID, db: Db, principal: Principal = require(Permission.ORDERS_READ)):
    return await service.view(db=db, order=await service.get(db=db, order_id=order_id))


@router.post("/v1/staff/orders/{order_id}/refunds", status_code=201)
async def staff_refund(order_id: uuid.UUID, body: RefundIn, db: Db, provider: Provider,
                       idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
                       principal: Principal = require(Permission.ORDERS_WRITE)):
    """Full (no amount) or partial refund through the provider; Idempotency-Key required."""
    if not idempotency_key:
        raise ValidationFailed("send an Idempotency-Key header")
    order = await service.get(db=db, order_id=order_id, lock=True)
    rf = await service.refund(db=db, provider=provider, order=order, amount=body.amount, reason=body.reason,
                              key=f"staff:{idempotency_key}", actor=await _actor(db, principal))
    return {"id": str(rf.id), "amount": str(rf.amount), "status": rf.status, "payment_status": order.payment_status}


@router.post("/v1/staff/orders/{order_id}/cancel")
async def staff_cancel(order_id: uuid.UUID, body: CancelIn, db: Db, provider: Provider,
                       principal: Principal = require(Permission.ORDERS_WRITE)):
    order = await service.get(db=db, order_id=order_id, lock=True)
    await service.cancel(db=db, provider=provider, order=order, reason=body.reason, actor=await _actor(db, principal))
    return await service.view(db=db, order=order)


@router.post("/v1/staff/orders/{order_id}/bank-transfer")
async def staff_bank_transfer(order_id: uuid.UUID, body: BankTransferIn, db: Db,
                              principal: Principal = require(Permission.ORDERS_WRITE)):
    """Confirm a bank transfer arrived: the order is paid and goes to dispatch."""
    order = await service.get(db=db, order_id=order_id, lock=True)
    await service.confirm_bank_transfer(db=db, order=order, actor=await _actor(db, principal), reference=body.reference)
    return await service.view(db=db, order=order)


@router.post("/v1/staff/returns/{return_id}")
async def staff_return_step(return_id: int, body: ReturnStep, db: Db, provider: Provider,
                            principal: Principal = require(Permission.ORDERS_WRITE)):
    """Approve, reject or receive a return/exchange (receiving refunds or ships the replacement)."""
    ret = await db.get(OrderReturn, return_id, with_for_update=True)
    if ret is None:
        raise NotFound(f"return {return_id} not found")
    ret = await service.advance_return(db=db, provider=provider, ret=ret, to=body.to, actor=await _actor(db, principal))
    return {"id": ret.id, "kind": ret.kind, "status": ret.status, "refund_amount": str(ret.refund_amount)}
