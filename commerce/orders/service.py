"""Order use cases: paid → handed to dispatch (`order.paid`), cancel, refunds, returns and exchanges, invoices, timeline.

Every state change is one function that also writes the order's timeline entry, the
outbox event and (for staff) the audit entry, in the caller's transaction. `mark_paid`
is the only way an order reaches dispatch: it sets the three statuses, numbers the
invoice and emits `order.paid` with an event id derived from the order id, so however
many paths try to mark one order paid (checkout answer, webhook, a retry), one row and
one event result.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from io import BytesIO
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import with_expression
from sqlalchemy.orm.attributes import set_committed_value

from commerce import money
from commerce.loyalty import service as loyalty
from commerce.orders.models import (
    DeliveryStatus,
    Order,
    OrderEvent,
    OrderLine,
    OrderReturn,
    OrderStatus,
    PaymentMethod,
    PaymentStatus,
    StockReservation,
)
from commerce.payments.models import PaymentEvent, PaymentTransaction, Refund, TxStatus
from commerce.payments.provider import PaymentProvider
from commerce.promotions import service as promotions
from core import audit, events
from core.errors import Conflict, NotFound, ValidationFailed

PAYLOAD_VERSION = 1
PARCEL_VOLUME_L = Decimal("50")  # one parcel per started 50 L of goods (a large delivery box)
EVENT_NS = uuid.UUID("6f1c1f9e-5c4e-4c8e-9a55-0c0ffee00001")  # namespace of commerce's deterministic event ids


def event_id(order_id: uuid.UUID, kind: str) -> uuid.UUID:
    """Deterministic outbox event id: the same fact about the same order is one event, however often emitted."""
    return uuid.uuid5(EVENT_NS, f"{order_id}:{kind}")


async def add_event(db: AsyncSession, order_id: uuid.UUID, type_: str, note: str = "", **data: Any) -> None:
    """Append one entry to the order's timeline (written at the session's next flush, in the caller's transaction).

    Not flushed here: a paying transaction adds two entries and changes the order in between, and
    one flush writes both entries in one INSERT and the order in one UPDATE (a flush per entry
    cost three more round trips). Entries keep the order they were added in (ids ascending).
    """
    plain = {k: (str(v) if isinstance(v, Decimal | uuid.UUID | datetime) else v) for k, v in data.items()}
    db.add(OrderEvent(order_id=order_id, type=type_, note=note, data=plain))


def _with_location(stmt):
    """`stmt` (a select of Order) also loading the drop-off's coordinates into order.lat / order.lng."""
    return stmt.options(with_expression(Order.lat, func.ST_Y(Order.location)),
                        with_expression(Order.lng, func.ST_X(Order.location)))


async def get(*, db: AsyncSession, order_id: uuid.UUID, lock: bool = False) -> Order:
    stmt = _with_location(select(Order).where(Order.id == order_id))
    if lock:
        stmt = stmt.with_for_update()
    order = (await db.execute(stmt)).scalar_one_or_none()
    if order is None:
        raise NotFound(f"order {order_id} not found")
    return order


async def by_tracking_token(*, db: AsyncSession, token: str) -> Order:
    order = (await db.execute(_with_location(select(Order).where(Order.tracking_token == token)))).scalar_one_or_none()
    if order is None:
        raise NotFound("order not found")
    return order


async def lines(*, db: AsyncSession, order_id: uuid.UUID) -> list[OrderLine]:
    return list((await db.execute(select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.id))).scalars())


async def location_of(*, db: AsyncSession, order: Order) -> tuple[float, float]:
    """The drop-off's (lat, lng): loaded with the order by `get`, else one query."""
    if order.lat is not None and order.lng is not None:
        return float(order.lat), float(order.lng)
    row = (await db.execute(text("SELECT ST_Y(location) AS lat, ST_X(location) AS lng FROM orders WHERE id = :id"),
                            {"id": order.id})).one()
    return float(row.lat), float(row.lng)


def parcels_for(volume_l: Decimal, skills: list[str], has_ambient: bool) -> int:
    """Parcels the driver carries: one per started PARCEL_VOLUME_L, plus a separate cold box when goods are mixed."""
    n = max(1, math.ceil(volume_l / PARCEL_VOLUME_L)) if volume_l > 0 else 1
    if "cold" in skills and has_ambient:
        n += 1
    return n


async def order_paid_payload(*, db: AsyncSession, order: Order) -> dict[str, Any]:
    """The `order.paid` contract with dispatch (docs/commerce.md); plain JSON types only."""
    lat, lng = await location_of(db=db, order=order)
    collect = order.total if order.payment_method == PaymentMethod.CASH_ON_DELIVERY else Decimal("0")
    return {
        "version": PAYLOAD_VERSION,
        "order_id": str(order.id),
        "order_number": order.number,
        "contact": {"name": order.contact_name, "phone": order.phone, "email": order.email},  # e-mail: notifications
        "dropoff": {"lat": lat, "lng": lng, "address": order.address_text},
        "window": {"start": order.window_start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                   "end": order.window_end.astimezone(UTC).isoformat().replace("+00:00", "Z")},
        "weight_kg": float(order.weight_kg),
        "volume_l": float(order.volume_l),
        "parcels": order.parcels,
        "skills": sorted(order.skills),
        "priority": order.priority,
        "pickup_depot_id": order.depot_id,
        "payment": {"method": order.payment_method, "collect": str(collect), "currency": order.currency},
        "tracking_token": order.tracking_token,
        # Flat aliases of contact, window and pickup_depot_id, for consumers that read these names
        # (dispatch's order.paid parser does); same values, same meaning.
        "recipient_name": order.contact_name,
        "recipient_phone": order.phone,
        "window_start": order.window_start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "window_end": order.window_end.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "depot_id": order.depot_id,
    }


async def number_invoice(db: AsyncSession, order: Order) -> None:
    """Give the order the next invoice number (INV-00000042), in one statement.

    A counter row locked by the UPDATE, not a sequence: sequences leave gaps on rollback, and
    invoice numbers must be gapless; the lock is held only until the paying transaction commits.
    The counter and the order are updated together (it was two round trips, both under the lock).
    """
    number = (await db.execute(text("""
        WITH n AS (UPDATE invoice_counters SET next_value = next_value + 1 WHERE series = 'INV'
                   RETURNING (next_value - 1)::text AS v)
        UPDATE orders SET invoice_number = 'INV-' || lpad(n.v, greatest(8, length(n.v)), '0')
        FROM n WHERE orders.id = :id RETURNING orders.invoice_number
    """), {"id": order.id})).scalar_one()
    set_committed_value(order, "invoice_number", number)


async def hand_to_dispatch(*, db: AsyncSession, order: Order, now: datetime) -> None:
    """Emit `order.paid` (once per order) and mark the order awaiting dispatch."""
    if order.delivery_status != DeliveryStatus.NOT_READY:
        return
    # The payload first: a flush of the order expires its loaded lat/lng (location_of would query again).
    payload = await order_paid_payload(db=db, order=order)
    order.status = OrderStatus.CONFIRMED
    order.delivery_status = DeliveryStatus.AWAITING_DISPATCH
    await add_event(db, order.id, "handed_to_dispatch", "Handed to dispatch")  # flushed with the order by the next statement
    await db.execute(update(StockReservation).where(StockReservation.order_id == order.id,
                                                    StockReservation.status == "held").values(status="committed"))
    await events.emit(db, type="order.paid", payload=payload, aggregate="order", aggregate_id=str(order.id),
                      event_id=event_id(order.id, "order.paid"))
    await db.flush()


async def mark_paid(*, db: AsyncSession, order: Order, now: datetime, via: str, defer_invoice: bool = False) -> bool:
    """Payment secured: payment status paid, invoice numbered, `order.paid` emitted. False if it already was.

    `defer_invoice`: the caller numbers the invoice itself (`invoice_due`, then `number_invoice`) as the
    last statement of its transaction, after reads of its own (checkout builds its answer first).
    """
    if order.payment_status in (PaymentStatus.PAID, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED):
        return False
    if order.status == OrderStatus.CANCELLED:
        # Money arrived for an order that was cancelled meanwhile (e.g. a 3-D Secure completed after a cancel):
        # record it; support refunds it. It must not go out for delivery.
        order.payment_status = PaymentStatus.PAID
        order.paid_at = now
        await add_event(db, order.id, "paid_after_cancel", "Payment received after cancellation; refund due", via=via)
        return True
    order.payment_status = PaymentStatus.PAID
    order.paid_at = now
    await add_event(db, order.id, "paid", f"Payment received ({via})", via=via)
    await hand_to_dispatch(db=db, order=order, now=now)
    # The invoice number last: its counter row stays locked until this transaction commits, and
    # every paying transaction needs it, so as little as possible runs while it is held. (The number
    # is on the order, not in the "paid" timeline entry: that entry is written before it, and
    # order_events is append-only.)
    if not defer_invoice and order.invoice_number is None:
        await number_invoice(db, order)
    return True


def invoice_due(order: Order) -> bool:
    """A paid order still without its invoice number (mark_paid(defer_invoice=True) left it to the caller)."""
    return order.payment_status == PaymentStatus.PAID and order.status != OrderStatus.CANCELLED and order.invoice_number is None


async def release(*, db: AsyncSession, order: Order) -> None:
    """Give back what a not-completed order held: stock, its coupon use, its loyalty points (idempotent)."""
    held = (await db.execute(select(StockReservation).where(StockReservation.order_id == order.id,
                                                            StockReservation.status.in_(("held", "committed")))
                             .order_by(StockReservation.variant_id).with_for_update())).scalars().all()
    for r in held:
        await db.execute(text("UPDATE stock SET quantity = quantity + :q WHERE variant_id = :v AND depot_id = :d"),
                         {"q": r.quantity, "v": r.variant_id, "d": r.depot_id})
        r.status = "released"
    await promotions.void(db=db, order_id=order.id)
    if order.user_id is not None and order.points_redeemed:
        await loyalty.restore(db=db, user_id=order.user_id, order_id=order.id)
    await db.flush()


async def payment_failed(*, db: AsyncSession, order: Order, reason: str) -> None:
    """The card was declined or authentication failed: cancel the order and release what it held."""
    if order.payment_status in (PaymentStatus.PAID, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED):
        return  # a late failure report for an attempt that was superseded by a success
    if order.status == OrderStatus.CANCELLED:
        return
    order.payment_status = PaymentStatus.FAILED
    order.status = OrderStatus.CANCELLED
    order.delivery_status = DeliveryStatus.CANCELLED
    order.cancelled_at = datetime.now(UTC)
    await release(db=db, order=order)
    await add_event(db, order.id, "payment_failed", reason)


async def transaction_for(*, db: AsyncSession, order_id: uuid.UUID, lock: bool = False) -> PaymentTransaction | None:
    stmt = select(PaymentTransaction).where(PaymentTransaction.order_id == order_id).order_by(PaymentTransaction.created_at.desc())
    if lock:
        stmt = stmt.with_for_update()
    return (await db.execute(stmt.limit(1))).scalar_one_or_none()


async def refund(*, db: AsyncSession, provider: PaymentProvider, order: Order, amount: Decimal | None, reason: str,
                 key: str, actor: dict[str, Any] | None = None) -> Refund:
    """Refund `amount` (None: everything still refundable) through the provider; idempotent on `key`."""
    existing = (await db.execute(select(Refund).where(Refund.idempotency_key == key))).scalar_one_or_none()
    if existing is not None:
        return existing
    tx = await transaction_for(db=db, order_id=order.id, lock=True)
    if tx is None or tx.charged <= 0:
        raise Conflict("nothing was charged on this order, so nothing can be refunded")
    refundable = tx.charged - tx.refunded
    amt = refundable if amount is None else money.round_money(amount, order.currency)
    if amt <= 0 or amt > refundable:
        raise ValidationFailed(f"refund must be between 0.01 and {refundable} {order.currency}")
    rf = Refund(id=uuid.uuid4(), transaction_id=tx.id, order_id=order.id, amount=amt, reason=reason,
                idempotency_key=key, status="pending")
    db.add(rf)
    await db.flush()
    if tx.provider == "stripe" and tx.provider_ref:
        result = await provider.refund(ref=tx.provider_ref, amount_minor=money.to_minor(amt, order.currency),
                                       idempotency_key=key)
        rf.provider_ref = result.ref
        rf.status = "succeeded" if result.status in ("succeeded", "pending") else "failed"
    else:
        rf.status = "succeeded"  # cash / bank transfer: paid back outside the system, recorded here
    if rf.status == "succeeded":
        tx.refunded += amt
        db.add(PaymentEvent(transaction_id=tx.id, provider_ref=tx.provider_ref or f"{tx.provider}:{tx.id}",
                            type="refund", amount=amt, data={"refund": rf.provider_ref, "reason": reason}))
        order.payment_status = PaymentStatus.REFUNDED if tx.refunded >= tx.charged else PaymentStatus.PARTIALLY_REFUNDED
        await add_event(db, order.id, "refunded", f"Refunded {amt} {order.currency}", amount=str(amt), reason=reason)
        await events.emit(db, type="order.refunded", payload={"order_id": str(order.id), "order_number": order.number,
                                                              "amount": str(amt), "currency": order.currency,
                                                              "reason": reason},
                          aggregate="order", aggregate_id=str(order.id), event_id=event_id(order.id, f"refund:{key}"))
        if order.user_id is not None:
            spend = order.total - order.delivery_fee
            await loyalty.reverse_for_refund(db=db, user_id=order.user_id, order_id=order.id,
                                             refunded=min(tx.refunded, spend), spend=spend)
    if actor:
        await audit.record(db, actor_id=actor.get("id"), actor_email=actor.get("email", ""), action="order.refund",
                           object_type="order", object_id=order.id, after={"amount": str(amt), "reason": reason})
    await db.flush()
    return rf


CANCELLABLE_DELIVERY = (DeliveryStatus.NOT_READY, DeliveryStatus.AWAITING_DISPATCH)


async def cancel(*, db: AsyncSession, provider: PaymentProvider, order: Order, reason: str,
                 actor: dict[str, Any] | None = None) -> Order:
    """Cancel before pickup: refund what was charged, cancel an unfinished card payment, release, tell dispatch."""
    if order.status == OrderStatus.CANCELLED:
        return order
    if order.delivery_status not in CANCELLABLE_DELIVERY or order.status not in (OrderStatus.PLACED, OrderStatus.CONFIRMED):
        raise Conflict("the order has been picked up or delivered; ask for a return instead")
    was_dispatched = order.delivery_status == DeliveryStatus.AWAITING_DISPATCH
    tx = await transaction_for(db=db, order_id=order.id, lock=True)
    if tx is not None and tx.charged > tx.refunded:
        await refund(db=db, provider=provider, order=order, amount=None, reason="cancelled", key=f"cancel:{order.id}")
    elif tx is not None and tx.provider == "stripe" and tx.provider_ref and tx.status in (TxStatus.ACTION_REQUIRED, TxStatus.CREATED):
        try:
            await provider.cancel_intent(ref=tx.provider_ref)
        except Exception:  # noqa: BLE001 - the intent may already be final; the webhook reconciles
            pass
        tx.status = TxStatus.CANCELED
    if order.payment_status in (PaymentStatus.PENDING, PaymentStatus.ACTION_REQUIRED):
        order.payment_status = PaymentStatus.VOIDED
    order.status = OrderStatus.CANCELLED
    order.delivery_status = DeliveryStatus.CANCELLED
    order.cancelled_at = datetime.now(UTC)
    await release(db=db, order=order)
    await add_event(db, order.id, "cancelled", reason)
    if was_dispatched:
        await events.emit(db, type="order.cancelled", payload={"order_id": str(order.id), "order_number": order.number,
                                                               "reason": reason},
                          aggregate="order", aggregate_id=str(order.id), event_id=event_id(order.id, "order.cancelled"))
    if actor:
        await audit.record(db, actor_id=actor.get("id"), actor_email=actor.get("email", ""), action="order.cancel",
                           object_type="order", object_id=order.id, after={"reason": reason})
    await db.flush()
    return order


async def confirm_bank_transfer(*, db: AsyncSession, order: Order, actor: dict[str, Any], reference: str) -> Order:
    """Staff saw the transfer arrive: the transaction is charged and the order paid."""
    if order.payment_method != PaymentMethod.BANK_TRANSFER:
        raise Conflict("the order is not paid by bank transfer")
    tx = await transaction_for(db=db, order_id=order.id, lock=True)
    if tx is None:
        raise Conflict("the order has no payment transaction")
    now = datetime.now(UTC)
    if tx.charged < tx.amount:
        tx.charged = tx.amount
        tx.status = TxStatus.SUCCEEDED
        db.add(PaymentEvent(transaction_id=tx.id, provider_ref=tx.provider_ref or f"bank_transfer:{tx.id}",
                            type="bank_transfer_received", amount=tx.amount, data={"reference": reference}))
    await mark_paid(db=db, order=order, now=now, via="bank transfer")
    await audit.record(db, actor_id=actor.get("id"), actor_email=actor.get("email", ""), action="order.bank_transfer_confirmed",
                       object_type="order", object_id=order.id, after={"reference": reference, "amount": str(tx.amount)})
    return order


# --- delivery outcomes (consumed from dispatch's events) -----------------------------------


async def delivery_completed(*, db: AsyncSession, settings, order: Order, now: datetime, cash_collected: bool = True) -> None:
    """Delivered: cash settled by the driver's scan, loyalty credited, order completed."""
    if order.delivery_status == DeliveryStatus.DELIVERED:
        return
    order.delivery_status = DeliveryStatus.DELIVERED
    order.delivered_at = now
    if order.status in (OrderStatus.CONFIRMED, OrderStatus.PLACED):
        order.status = OrderStatus.COMPLETED
    tx = await transaction_for(db=db, order_id=order.id, lock=True)
    if order.payment_method == PaymentMethod.CASH_ON_DELIVERY and tx is not None and cash_collected and tx.charged < tx.amount:
        tx.charged = tx.amount
        tx.status = TxStatus.SUCCEEDED
        db.add(PaymentEvent(transaction_id=tx.id, provider_ref=tx.provider_ref or f"cash:{tx.id}", type="cash_collected",
                            amount=tx.amount, data={"by": "driver delivery scan"}))
        order.payment_status = PaymentStatus.PAID
        order.paid_at = now
        if order.invoice_number is None:
            await number_invoice(db, order)
    await add_event(db, order.id, "delivered", "Delivered")
    if order.user_id is not None and order.payment_status in (PaymentStatus.PAID, PaymentStatus.PARTIALLY_REFUNDED):
        refunded = tx.refunded if tx is not None else Decimal("0")
        spend = max(Decimal("0"), order.total - order.delivery_fee - refunded)
        points = await loyalty.credit_for_delivery(db=db, settings=settings, user_id=order.user_id, order_id=order.id,
                                                   spend=spend, currency=order.currency, now=now)
        if points:
            await add_event(db, order.id, "points_earned", f"{points} loyalty points", points=points)


async def delivery_attempt_failed(*, db: AsyncSession, order: Order, reason: str, attempts: int | None = None) -> None:
    """An attempt failed (nobody home, …): the customer sees it; dispatch may still deliver, so nothing is refunded yet."""
    if order.delivery_status in (DeliveryStatus.DELIVERED, DeliveryStatus.RETURNED):
        return
    order.delivery_status = DeliveryStatus.FAILED
    await add_event(db, order.id, "delivery_attempt_failed", reason or "Delivery attempt failed",
                    **({"attempts": attempts} if attempts is not None else {}))


async def delivery_returned(*, db: AsyncSession, provider: PaymentProvider, order: Order, reason: str) -> None:
    """Delivery given up and the parcel is back at the depot: refund what was charged, restock, cancel."""
    if order.delivery_status in (DeliveryStatus.RETURNED, DeliveryStatus.DELIVERED):
        return
    order.delivery_status = DeliveryStatus.RETURNED
    tx = await transaction_for(db=db, order_id=order.id)
    if tx is not None and tx.charged > tx.refunded:
        await refund(db=db, provider=provider, order=order, amount=None, reason="delivery_failed",
                     key=f"delivery-failed:{order.id}")
    elif order.payment_status == PaymentStatus.PENDING:
        order.payment_status = PaymentStatus.VOIDED  # cash never collected
    order.status = OrderStatus.CANCELLED
    order.cancelled_at = datetime.now(UTC)
    await release(db=db, order=order)
    await add_event(db, order.id, "delivery_returned", reason or "Not delivered; back at the depot")


# --- returns and exchanges -----------------------------------------------------------------

RETURN_FLOW = {"requested": {"approved", "rejected"}, "approved": {"received"}, "received": {"refunded", "exchanged"}}


async def request_return(*, db: AsyncSession, order: Order, kind: str, items: list[dict[str, int]], reason: str) -> OrderReturn:
    """A return (refund) or exchange of delivered lines; quantities checked against what is still returnable."""
    if order.delivery_status != DeliveryStatus.DELIVERED:
        raise Conflict("only delivered orders can be returned")
    if kind not in ("return", "exchange"):
        raise ValidationFailed("kind must be return or exchange")
    by_id = {ln.id: ln for ln in await lines(db=db, order_id=order.id)}
    if not items:
        raise ValidationFailed("name at least one line to return")
    for it in items:
        ln = by_id.get(int(it.get("line_id", 0)))
        q = int(it.get("quantity", 0))
        if ln is None or q <= 0 or q > ln.quantity - ln.returned_quantity:
            raise ValidationFailed(f"line {it.get('line_id')}: cannot return {q}")
        if kind == "exchange" and not it.get("exchange_variant_id"):
            raise ValidationFailed("an exchange names the variant wanted instead (exchange_variant_id)")
    ret = OrderReturn(order_id=order.id, kind=kind, status="requested", lines=items, reason=reason)
    db.add(ret)
    await db.flush()
    await add_event(db, order.id, f"{kind}_requested", reason, return_id=ret.id)
    return ret


async def advance_return(*, db: AsyncSession, provider: PaymentProvider, ret: OrderReturn, to: str,
                         actor: dict[str, Any]) -> OrderReturn:
    """Move a return/exchange one step: approved, rejected, received; receiving refunds (return) or ships (exchange)."""
    if to not in RETURN_FLOW.get(ret.status, set()) or to in ("refunded", "exchanged"):
        raise Conflict(f"a {ret.status} {ret.kind} cannot become {to}")
    order = await get(db=db, order_id=ret.order_id, lock=True)
    before = ret.status
    ret.status = to
    if to == "received":
        by_id = {ln.id: ln for ln in await lines(db=db, order_id=order.id)}
        amount = Decimal("0")
        for it in ret.lines:
            ln = by_id[int(it["line_id"])]
            q = int(it["quantity"])
            ln.returned_quantity += q
            await db.execute(text("""INSERT INTO stock (variant_id, depot_id, quantity) VALUES (:v, :d, :q)
                                     ON CONFLICT (variant_id, depot_id) DO UPDATE SET quantity = stock.quantity + :q"""),
                             {"v": ln.variant_id, "d": order.depot_id, "q": q})
            amount += money.round_money(ln.gross * q / ln.quantity, order.currency)
        if ret.kind == "return":
            await refund(db=db, provider=provider, order=order, amount=amount, reason="return", key=f"return:{ret.id}")
            ret.refund_amount = amount
            ret.status = "refunded"
            if all(ln.returned_quantity >= ln.quantity for ln in by_id.values()):
                order.status = OrderStatus.RETURNED
        else:
            for it in ret.lines:
                took = (await db.execute(text("""UPDATE stock SET quantity = quantity - :q
                                                 WHERE variant_id = :v AND depot_id = :d AND quantity >= :q RETURNING 1"""),
                                         {"q": int(it["quantity"]), "v": int(it["exchange_variant_id"]), "d": order.depot_id})).first()
                if took is None:
                    raise Conflict(f"variant {it['exchange_variant_id']} is out of stock at the depot; refund instead")
            ret.status = "exchanged"
            await events.emit(db, type="order.exchange", payload={
                **await order_paid_payload(db=db, order=order), "return_id": ret.id, "lines": ret.lines},
                aggregate="order", aggregate_id=str(order.id), event_id=event_id(order.id, f"exchange:{ret.id}"))
    ret.updated_at = datetime.now(UTC)
    await add_event(db, order.id, f"{ret.kind}_{ret.status}", "", return_id=ret.id)
    await audit.record(db, actor_id=actor.get("id"), actor_email=actor.get("email", ""), action=f"order.{ret.kind}",
                       object_type="order_return", object_id=ret.id, before={"status": before}, after={"status": ret.status})
    await db.flush()
    return ret


# --- reading -------------------------------------------------------------------------------


async def history(*, db: AsyncSession, user_id: uuid.UUID, limit: int = 50) -> list[Order]:
    return list((await db.execute(select(Order).where(Order.user_id == user_id).order_by(Order.created_at.desc())
                                  .limit(limit))).scalars())


async def timeline(*, db: AsyncSession, order_id: uuid.UUID) -> list[OrderEvent]:
    return list((await db.execute(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id))).scalars())


async def payment_summary(*, db: AsyncSession, order_id: uuid.UUID) -> dict[str, Any] | None:
    n_events = (select(func.count()).select_from(PaymentEvent)
                .where(PaymentEvent.transaction_id == PaymentTransaction.id).scalar_subquery())
    row = (await db.execute(select(PaymentTransaction, n_events).where(PaymentTransaction.order_id == order_id)
                            .order_by(PaymentTransaction.created_at.desc()).limit(1))).first()
    if row is None:
        return None
    tx, n_events = row
    return {"provider": tx.provider, "status": tx.status, "amount": tx.amount, "authorised": tx.authorised,
            "charged": tx.charged, "refunded": tx.refunded, "currency": tx.currency, "events": n_events,
            "client_secret": tx.client_secret if tx.status == TxStatus.ACTION_REQUIRED else None,
            "provider_ref": tx.provider_ref, "error": tx.last_error}


def invoice_pdf(*, order: Order, order_lines: list[OrderLine], seller: str = "Serena Oy, Helsinki") -> bytes:
    """A one-page PDF invoice (reportlab) with per-line VAT."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfgen import canvas

    if order.invoice_number is None:
        raise Conflict("the order is not paid yet, so it has no invoice")
    buf = BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setTitle(f"Invoice {order.invoice_number}")
    w, h = A4
    y = h - 25 * mm
    c.setFont("Helvetica-Bold", 16)
    c.drawString(20 * mm, y, f"Invoice {order.invoice_number}")
    c.setFont("Helvetica", 10)
    y -= 8 * mm
    for line in (seller, f"Order {order.number}   Date {(order.paid_at or order.created_at).date().isoformat()}",
                 f"Bill to: {order.contact_name}, {order.email}", order.address_text):
        c.drawString(20 * mm, y, line)
        y -= 5 * mm
    y -= 5 * mm
    c.setFont("Helvetica-Bold", 9)
    for x, label in ((20, "Item"), (100, "Qty"), (115, "Unit"), (135, "VAT %"), (155, "VAT"), (175, "Total")):
        c.drawString(x * mm, y, label)
    c.setFont("Helvetica", 9)
    for ln in order_lines:
        y -= 5 * mm
        for x, val in ((20, f"{ln.name[:45]} ({ln.sku})"), (100, str(ln.quantity)), (115, str(ln.unit_price)),
                       (135, str((ln.tax_rate * 100).normalize())), (155, str(ln.tax)), (175, str(ln.gross))):
            c.drawString(x * mm, y, val)
    y -= 10 * mm
    for label, val in (("Discounts", -order.discount_total), ("Delivery", order.delivery_fee),
                       ("of which VAT", order.tax_total), ("Total", order.total)):
        c.drawString(135 * mm, y, label)
        c.drawRightString(190 * mm, y, f"{val} {order.currency}")
        y -= 5 * mm
    c.drawString(20 * mm, y - 5 * mm, "Prices include VAT." if order.prices_include_tax else "Prices exclude VAT.")
    c.showPage()
    c.save()
    return buf.getvalue()


async def view(*, db: AsyncSession, order: Order, with_timeline: bool = True,
               location: tuple[float, float] | None = None) -> dict[str, Any]:
    """An order as its customer (or support) sees it: statuses, amounts, lines, payment, timeline.

    `location`: the drop-off's (lat, lng) when the caller knows them (else location_of).
    """
    lat, lng = location or await location_of(db=db, order=order)
    out: dict[str, Any] = {
        "id": str(order.id), "number": order.number, "status": order.status, "payment_status": order.payment_status,
        "delivery_status": order.delivery_status, "payment_method": order.payment_method, "currency": order.currency,
        "prices_include_tax": order.prices_include_tax, "subtotal": order.subtotal, "discount_total": order.discount_total,
        "delivery_fee": order.delivery_fee, "tax_total": order.tax_total, "total": order.total,
        "points_redeemed": order.points_redeemed, "coupon_code": order.coupon_code,
        "contact": {"name": order.contact_name, "email": order.email, "phone": order.phone},
        "address": {"text": order.address_text, "lat": lat, "lng": lng, "country": order.country},
        "window": {"start": order.window_start.isoformat(), "end": order.window_end.isoformat()},
        "distance_m": order.distance_m, "distance_source": order.distance_source,
        "tracking_token": order.tracking_token, "invoice_number": order.invoice_number,
        "created_at": order.created_at.isoformat() if order.created_at else None,
        "lines": [{"id": ln.id, "sku": ln.sku, "name": ln.name, "quantity": ln.quantity, "unit_price": ln.unit_price,
                   "tax_rate": ln.tax_rate, "discount": ln.discount, "net": ln.net, "tax": ln.tax, "gross": ln.gross,
                   "returned_quantity": ln.returned_quantity}
                  for ln in await lines(db=db, order_id=order.id)],
        "payment": await payment_summary(db=db, order_id=order.id),
    }
    if with_timeline:
        out["timeline"] = [{"type": e.type, "note": e.note, "at": e.at.isoformat(), "data": e.data}
                           for e in await timeline(db=db, order_id=order.id)]
    return money.plain(out)


async def expire_unpaid(*, db: AsyncSession, provider: PaymentProvider, now: datetime, card_after_s: int = 3600,
                        bank_transfer_after_s: int = 7 * 86400, limit: int = 200) -> int:
    """Cancel orders whose payment never came (abandoned 3-D Secure, unpaid bank transfers): stock goes back.

    Run periodically (`serena commerce expire`); rows are taken with SKIP LOCKED so two runs
    never fight over one order, and an order being paid right now is skipped (its row is locked).
    """
    from datetime import timedelta

    rows = (await db.execute(
        select(Order).where(
            Order.status == OrderStatus.PLACED,
            Order.payment_status.in_((PaymentStatus.PENDING, PaymentStatus.ACTION_REQUIRED)),
            ((Order.payment_method == PaymentMethod.CARD) & (Order.created_at < now - timedelta(seconds=card_after_s)))
            | ((Order.payment_method == PaymentMethod.BANK_TRANSFER)
               & (Order.created_at < now - timedelta(seconds=bank_transfer_after_s))))
        .order_by(Order.created_at).limit(limit).with_for_update(skip_locked=True))).scalars().all()
    for order in rows:
        await cancel(db=db, provider=provider, order=order, reason="payment not received in time")
    return len(rows)
