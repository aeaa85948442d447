"""What commerce publishes and consumes on the event bus.

Publishes (through the outbox, in the transaction of the change):
- `order.paid`: the order is ready for dispatch (card paid, bank transfer confirmed, or cash
  on delivery accepted — then `payment.collect` says how much the driver collects). The
  payload is the contract with dispatch; see docs/commerce.md.
- `order.cancelled`: an order that had been handed to dispatch was cancelled before pickup.
- `order.refunded`: money went back (amount, currency, reason).
- `order.exchange`: a replacement delivery for an exchange (same shape as order.paid + lines).

Consumes `delivery.completed` (cash settled by the driver's scan, loyalty credit),
`delivery.failed` (an attempt failed: shown to the customer, nothing refunded — dispatch's
lifecycle lets a failed job be attempted again and delivered), `delivery.returned` (given up,
parcel back at the depot: card refunded, stock back, order cancelled) and
`delivery.picked_up` (no more cancelling). The order is found by `order_id`, or by
dispatch's `idempotency_key` ("order:<order id>"), or by the order number in `order_number`
/ `reference`. The consumer group
"commerce" records each event id in processed_events in the same transaction as its
effect, so a redelivered event does nothing twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from commerce.orders import service as orders
from commerce.orders.models import DeliveryStatus, Order
from commerce.payments.provider import PaymentProvider
from core.errors import NotFound
from core.events import Event
from core.settings import Settings

GROUP = "commerce"
CONSUMES = ("delivery.completed", "delivery.failed", "delivery.returned", "delivery.picked_up")


async def _order_for(db: AsyncSession, payload: dict[str, Any]) -> Order | None:
    ref = payload.get("order_id")
    key = str(payload.get("idempotency_key") or "")
    if not ref and key.startswith("order:"):
        ref = key.removeprefix("order:")
    if ref:
        try:
            return await orders.get(db=db, order_id=uuid.UUID(str(ref)), lock=True)
        except (ValueError, NotFound):
            return None
    number = payload.get("order_number") or payload.get("reference")
    if number and str(number).isdigit():
        return (await db.execute(select(Order).where(Order.number == int(number)).with_for_update())).scalar_one_or_none()
    return None


def make_handler(*, settings: Settings, provider: PaymentProvider):
    """The consumer's handler: `async def handle(db, event)` in the consumer's transaction."""

    async def handle(db: AsyncSession, event: Event) -> None:
        order = await _order_for(db, event.payload)
        if order is None:
            return  # a delivery that did not come from a commerce order (API job): not ours
        now = datetime.now(UTC)
        if event.type == "delivery.completed":
            await orders.delivery_completed(db=db, settings=settings, order=order, now=now,
                                            cash_collected=bool(event.payload.get("cash_collected", True)))
        elif event.type == "delivery.failed":
            attempts = event.payload.get("attempts")
            await orders.delivery_attempt_failed(db=db, order=order, reason=str(event.payload.get("reason") or ""),
                                                 attempts=int(attempts) if isinstance(attempts, int) else None)
        elif event.type == "delivery.returned":
            await orders.delivery_returned(db=db, provider=provider, order=order,
                                           reason=str(event.payload.get("reason") or ""))
        elif event.type == "delivery.picked_up" and order.delivery_status == DeliveryStatus.AWAITING_DISPATCH:
            order.delivery_status = DeliveryStatus.OUT_FOR_DELIVERY
            await orders.add_event(db, order.id, "picked_up", "Out for delivery")

    return handle
