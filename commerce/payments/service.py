"""Payment use cases: apply what the provider says about a payment, and take Stripe webhooks safely.

Two paths report on one PaymentIntent: the checkout request (the answer to confirm, or a
later refresh) and the webhook. Both end in `apply_intent`, which locks the transaction
row, appends the report to the event list, and moves the buckets and the order forward
only: a success is final, so a late `payment_failed` for an attempt that later succeeded,
or a webhook delivered after the checkout already recorded the success, changes nothing.
`orders.mark_paid` emits `order.paid` with a deterministic event id, so whichever path
gets there first, there is one paid order and one event.

Webhooks: the signature (HMAC over "timestamp.body") and the timestamp (within
settings.commerce_webhook_tolerance_s) are checked by the SDK; the event id is then
inserted into `webhook_receipts`, whose primary key makes a replayed or re-delivered
event a no-op, committed together with its effect.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from commerce import money
from commerce.orders import service as orders
from commerce.orders.models import Order, PaymentStatus
from commerce.payments.models import PaymentEvent, PaymentTransaction, TxStatus
from commerce.payments.provider import Intent, PaymentProvider, intent_from_object

# How far along a transaction is; a report never moves it backwards. Failed and canceled share
# the top rank with succeeded so that a stale "processing" cannot reopen them, but they cannot
# override a success (see apply_intent).
_RANK = {TxStatus.CREATED: 0, TxStatus.SUBMITTING: 0, TxStatus.ACTION_REQUIRED: 1, TxStatus.PROCESSING: 2, TxStatus.AUTHORISED: 3,
         TxStatus.SUCCEEDED: 4, TxStatus.FAILED: 4, TxStatus.CANCELED: 4, TxStatus.PENDING_OFFLINE: 0}
_FROM_PROVIDER = {"succeeded": TxStatus.SUCCEEDED, "requires_capture": TxStatus.AUTHORISED,
                  "requires_action": TxStatus.ACTION_REQUIRED, "requires_confirmation": TxStatus.CREATED,
                  "processing": TxStatus.PROCESSING, "failed": TxStatus.FAILED, "canceled": TxStatus.CANCELED,
                  "requires_payment_method": TxStatus.CREATED}


async def lock_transaction(*, db: AsyncSession, tx_id: uuid.UUID | None = None, ref: str | None = None) -> PaymentTransaction | None:
    stmt = select(PaymentTransaction)
    stmt = stmt.where(PaymentTransaction.id == tx_id) if tx_id is not None else stmt.where(PaymentTransaction.provider_ref == ref)
    return (await db.execute(stmt.with_for_update())).scalar_one_or_none()


async def apply_intent(*, db: AsyncSession, tx: PaymentTransaction, intent: Intent, source: str, now: datetime,
                       provider_event_id: str | None = None, event_type: str | None = None,
                       receipt_taken: bool = False, defer_invoice: bool = False, order: Order | None = None) -> bool:
    """Record one report about `tx` (locked by the caller) and move it and its order forward. False if a duplicate.

    `defer_invoice`: see orders.mark_paid (the caller numbers a paid order's invoice last). `order`: the
    transaction's order when the caller has already read and locked it (after `tx`), so it is not read again.

    `receipt_taken`: the caller inserted the event's webhook_receipts row in this transaction (its primary
    key already made this the event's only application), so the payment_events look-up is skipped.
    """
    if provider_event_id is not None and not receipt_taken:
        seen = (await db.execute(select(PaymentEvent.id).where(PaymentEvent.provider_event_id == provider_event_id))).first()
        if seen:
            return False
    new = _FROM_PROVIDER.get(intent.status, TxStatus.PROCESSING)
    amount = money.from_minor(intent.amount_minor, tx.currency) if intent.amount_minor else Decimal("0")
    db.add(PaymentEvent(transaction_id=tx.id, provider_ref=intent.ref, provider_event_id=provider_event_id,
                        type=event_type or f"{source}:{intent.status}", amount=amount,
                        data={"status": intent.status, "source": source, "error": intent.error}))
    if tx.provider_ref is None:
        tx.provider_ref = intent.ref
    if intent.client_secret and not tx.client_secret:
        tx.client_secret = intent.client_secret
    current = TxStatus(tx.status)
    if current == TxStatus.SUCCEEDED:
        # Final, and the transaction that made it succeed also marked the order paid (every path to
        # SUCCEEDED does: here via _sync_order, cash and bank transfer in orders.service): nothing to
        # move, so the order row is neither locked nor read. This is the usual webhook, arriving
        # after the checkout request recorded the same success.
        await db.flush()
        return True
    final = current in (TxStatus.FAILED, TxStatus.CANCELED) and new != TxStatus.SUCCEEDED
    if not final and _RANK[new] >= _RANK[current]:
        tx.status = new
        tx.updated_at = now
        if new == TxStatus.SUCCEEDED:
            tx.authorised = max(tx.authorised, amount)
            tx.charged = max(tx.charged, money.from_minor(intent.amount_received_minor or intent.amount_minor, tx.currency))
        elif new == TxStatus.AUTHORISED:
            tx.authorised = max(tx.authorised, amount)
        elif new == TxStatus.FAILED:
            tx.last_error = intent.error or "payment failed"
    await db.flush()
    if order is None:
        order = await orders.get(db=db, order_id=tx.order_id, lock=True)
    await _sync_order(db=db, order=order, tx=tx, now=now, via=source, defer_invoice=defer_invoice)
    return True


async def _sync_order(*, db: AsyncSession, order: Order, tx: PaymentTransaction, now: datetime, via: str,
                      defer_invoice: bool = False) -> None:
    if tx.status == TxStatus.SUCCEEDED:
        await orders.mark_paid(db=db, order=order, now=now, via=via, defer_invoice=defer_invoice)
    elif tx.status == TxStatus.AUTHORISED and order.payment_status == PaymentStatus.PENDING:
        order.payment_status = PaymentStatus.AUTHORISED
    elif tx.status == TxStatus.ACTION_REQUIRED and order.payment_status == PaymentStatus.PENDING:
        order.payment_status = PaymentStatus.ACTION_REQUIRED
        await orders.add_event(db, order.id, "action_required", "Waiting for 3-D Secure authentication")
    elif tx.status == TxStatus.FAILED:
        await orders.payment_failed(db=db, order=order, reason=tx.last_error or "payment failed")


@dataclass(frozen=True)
class WebhookOutcome:
    event_id: str
    type: str
    applied: bool  # False: a duplicate, or an event we do not act on
    reason: str = ""


_INTENT_EVENTS = {"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.requires_action",
                  "payment_intent.processing", "payment_intent.canceled", "payment_intent.amount_capturable_updated"}


async def handle_webhook(*, db: AsyncSession, provider: PaymentProvider, payload: bytes, signature: str | None,
                         now: datetime | None = None) -> WebhookOutcome:
    """Verify, de-duplicate and apply one webhook delivery in the caller's transaction (BadSignature if forged)."""
    now = now or datetime.now(UTC)
    event = provider.parse_webhook(payload=payload, signature=signature)
    fresh = (await db.execute(text("""
        INSERT INTO webhook_receipts (provider, event_id, type) VALUES (:p, :e, :t)
        ON CONFLICT DO NOTHING RETURNING event_id
    """), {"p": provider.name, "e": event.id, "t": event.type[:64]})).first()
    if fresh is None:
        return WebhookOutcome(event.id, event.type, False, "duplicate delivery")
    if event.type in _INTENT_EVENTS:
        intent = intent_from_object(event.object)
        tx = await lock_transaction(db=db, ref=intent.ref)
        if tx is None and intent.metadata.get("transaction_id"):
            # The webhook can overtake the checkout request that created the intent; the metadata
            # names our transaction, and its row lock makes us wait for that request to commit.
            tx = await lock_transaction(db=db, tx_id=uuid.UUID(intent.metadata["transaction_id"]))
        if tx is None:
            return WebhookOutcome(event.id, event.type, False, "unknown payment")
        applied = await apply_intent(db=db, tx=tx, intent=intent, source="webhook", now=now,
                                     provider_event_id=event.id, event_type=event.type, receipt_taken=True)
        return WebhookOutcome(event.id, event.type, applied)
    if event.type == "charge.refunded":
        ref = event.object.get("payment_intent")
        tx = await lock_transaction(db=db, ref=ref) if ref else None
        if tx is None:
            return WebhookOutcome(event.id, event.type, False, "unknown payment")
        refunded = money.from_minor(int(event.object.get("amount_refunded") or 0), tx.currency)
        db.add(PaymentEvent(transaction_id=tx.id, provider_ref=ref, provider_event_id=event.id, type=event.type,
                            amount=refunded, data={"source": "webhook"}))
        if refunded > tx.refunded:  # a refund made outside Serena (e.g. the Stripe dashboard)
            tx.refunded = min(refunded, tx.charged)
            order = await orders.get(db=db, order_id=tx.order_id, lock=True)
            order.payment_status = PaymentStatus.REFUNDED if tx.refunded >= tx.charged else PaymentStatus.PARTIALLY_REFUNDED
            await orders.add_event(db, order.id, "refunded", f"Refund seen at the provider: {refunded} {tx.currency}")
        return WebhookOutcome(event.id, event.type, True)
    return WebhookOutcome(event.id, event.type, False, "event type not handled")


async def refresh(*, db: AsyncSession, provider: PaymentProvider, order_id: uuid.UUID, now: datetime | None = None) -> None:
    """Ask the provider for the payment's state now (after 3-D Secure, or when a webhook is late) and apply it."""
    now = now or datetime.now(UTC)
    tx = (await db.execute(select(PaymentTransaction).where(PaymentTransaction.order_id == order_id)
                           .order_by(PaymentTransaction.created_at.desc()).limit(1).with_for_update())).scalar_one_or_none()
    if tx is None or tx.provider_ref is None or tx.provider != provider.name:
        return
    if tx.status in (TxStatus.SUCCEEDED, TxStatus.FAILED, TxStatus.CANCELED):
        return
    intent = await provider.retrieve_intent(ref=tx.provider_ref)
    await apply_intent(db=db, tx=tx, intent=intent, source="refresh", now=now)
