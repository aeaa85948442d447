"""Checkout: turn a cart into an order with stock reserved, then secure its payment.

`checkout` runs in two transactions with the provider call between them, because a
network call must not sit inside the transaction that holds stock rows:

1. `place_order` (one transaction): re-price the cart from the current price list,
   check the address is served (before any payment), pick the nearest depot with the
   stock, price delivery, VAT, coupon and loyalty points, and reserve stock with
   conditional updates `quantity = quantity - n WHERE quantity >= n`, taken in variant-id
   order so concurrent checkouts queue on the row locks instead of deadlocking. 200
   buyers racing for 10 units get exactly 10 orders: the 11th update finds quantity 0.
2. Payment (`_pay_by_card`), with no transaction or pooled connection held over the provider
   call: a short transaction claims the payment row (CREATED -> SUBMITTING), the intent is
   created with the row's idempotency key and the order/transaction ids as metadata, and a
   second short transaction records the answer (and `order.paid` if it succeeded, the invoice
   number taken last). Two retries of one checkout arriving together do not create two intents
   (localstripe ignores idempotency keys, so we cannot rely on them alone): the second finds the
   claim and waits for the first's answer. The webhook can arrive before the answer is recorded;
   both paths are idempotent (one charge, one paid order, one `order.paid`).

Idempotency: the client's Idempotency-Key is `orders.checkout_key` (UNIQUE). A retry
with the same key — after a timeout, a double click, concurrently — finds the order and
resumes it; the same key with a different request is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from commerce import money
from commerce.cart import service as carts
from commerce.cart.models import Cart
from commerce.checkout import delivery, pricing
from commerce.loyalty import service as loyalty
from commerce.orders import service as orders
from commerce.orders.models import DeliveryStatus, Order, OrderLine, OrderStatus, PaymentMethod, PaymentStatus, StockReservation
from commerce.payments import service as payments
from commerce.payments.models import PaymentEvent, PaymentTransaction, TxStatus
from commerce.payments.provider import PaymentDeclined, PaymentProvider, ProviderUnavailable
from commerce.promotions import service as promotions
from core.errors import Conflict, NotFound, SerenaError, ValidationFailed
from core.settings import Settings


class OutOfStock(Conflict):
    code = "out_of_stock"


class PriceChanged(Conflict):
    code = "price_changed"


class IdempotencyMismatch(Conflict):
    code = "idempotency_key_reused"


class PaymentUnavailable(SerenaError):
    status_code = 503
    code = "payment_unavailable"


class PaymentRefused(SerenaError):
    status_code = 402
    code = "payment_declined"


@dataclass(frozen=True)
class CheckoutRequest:
    checkout_key: str  # the client's Idempotency-Key
    email: str
    name: str
    phone: str
    address_text: str
    lat: float
    lng: float
    window_start: datetime
    payment_method: str = PaymentMethod.CARD  # card | cash_on_delivery | bank_transfer
    payment_method_id: str | None = None  # the provider's token for the card (pm_...), made in the browser
    cart_token: str | None = None
    user_id: uuid.UUID | None = None
    country: str = "FI"
    region: str = ""
    coupon: str | None = None
    points: int = 0
    expected_total: Decimal | None = None  # what the customer saw; a different total now is refused

    def fingerprint(self) -> str:
        body = asdict(self)
        body.pop("checkout_key")
        return hashlib.sha256(json.dumps(body, default=str, sort_keys=True).encode()).hexdigest()


@dataclass
class CheckoutResult:
    order: Order
    created: bool  # False: a retry that found the order of an earlier attempt
    declined: str | None = None  # the provider's reason when the card was refused
    view: dict[str, Any] | None = None  # orders.view of the order as this request's payment left it, when built


async def _priced_lines(db: AsyncSession, cart: Cart) -> list[dict[str, Any]]:
    rows = (await db.execute(text("""
        SELECT l.variant_id, l.quantity, v.sku, p.name || CASE WHEN v.name <> '' THEN ' — ' || v.name ELSE '' END AS name,
               vp.amount, vp.includes_tax, p.tax_class, p.skills, v.weight_kg, v.volume_l, v.active AND p.published AS on_sale
        FROM cart_lines l
        JOIN product_variants v ON v.id = l.variant_id
        JOIN products p ON p.id = v.product_id
        LEFT JOIN variant_prices vp ON vp.variant_id = v.id AND vp.currency = :cur
        WHERE l.cart_id = :cart ORDER BY l.variant_id
    """), {"cart": cart.id, "cur": cart.currency})).mappings().all()
    for r in rows:
        if r["amount"] is None or not r["on_sale"]:
            raise Conflict(f"{r['sku']} is no longer on sale in {cart.currency}; remove it from the cart")
    return [dict(r) for r in rows]


async def tax_rate(*, db: AsyncSession, country: str, region: str, tax_class: str) -> Decimal:
    """The VAT rate for a destination and tax class (the region's own rate, else the country's)."""
    return (await tax_rates(db=db, country=country, region=region, tax_classes=[tax_class]))[tax_class]


async def tax_rates(*, db: AsyncSession, country: str, region: str, tax_classes: list[str]) -> dict[str, Decimal]:
    """The VAT rate of each tax class for a destination, in one query; ValidationFailed if one has none."""
    wanted = sorted(set(tax_classes))
    rows = (await db.execute(text("""
        SELECT DISTINCT ON (tax_class) tax_class, rate FROM tax_rates
        WHERE country = :c AND tax_class = ANY(CAST(:k AS text[])) AND region IN (:r, '')
        ORDER BY tax_class, region DESC
    """), {"c": country.upper(), "k": wanted, "r": region})).all()
    found = {r.tax_class: Decimal(r.rate) for r in rows}
    for k in wanted:
        if k not in found:
            raise ValidationFailed(f"we cannot sell {k!r} goods to {country.upper()}: no tax rate is configured")
    return found


async def _claim_cart(*, db: AsyncSession, settings: Settings, req: CheckoutRequest) -> Cart:
    """The request's open cart, locked for this checkout; a guest's is also marked ordered in the same statement.

    A guest cart is claimed with `UPDATE ... SET status = 'ordered' WHERE status = 'open' RETURNING`
    (one round trip where a SELECT ... FOR UPDATE and a later UPDATE were two); if the checkout
    fails, the transaction rolls back and the cart is open again.
    """
    if req.user_id is not None:
        cart = await carts.for_user(db=db, user_id=req.user_id, currency=settings.commerce_currency)
        return (await db.execute(select(Cart).where(Cart.id == cart.id).with_for_update())).scalar_one()
    if not req.cart_token:
        raise ValidationFailed("a guest checkout needs the cart token")
    cart = (await db.execute(update(Cart).where(Cart.token == req.cart_token, Cart.status == "open")
                             .values(status="ordered").returning(Cart)
                             .execution_options(synchronize_session=False))).scalar_one_or_none()
    if cart is None:
        raise NotFound("cart not found (unknown token, or it became an order)")
    return cart


async def place_order(*, db: AsyncSession, settings: Settings, req: CheckoutRequest,
                      now: datetime) -> tuple[Order, PaymentTransaction]:
    """Create the order from the cart in the caller's transaction: priced, zone-checked, stock reserved.

    Returns the order and its payment transaction (for a card: already claimed by this request, SUBMITTING).
    """
    if req.payment_method not in tuple(PaymentMethod):
        raise ValidationFailed(f"payment method must be one of {', '.join(PaymentMethod)}")
    if req.payment_method == PaymentMethod.CARD and not req.payment_method_id:
        raise ValidationFailed("a card payment needs payment_method_id (the token the payment form created)")
    cart = await _claim_cart(db=db, settings=settings, req=req)
    if cart.user_id is not None and cart.user_id != req.user_id:
        raise NotFound("cart not found")
    lines = await _priced_lines(db, cart)
    if not lines:
        raise ValidationFailed("the cart is empty")
    if req.points and req.user_id is None:
        raise ValidationFailed("loyalty points need a signed-in customer")

    # Serviceability first (the zone), so an address we cannot reach is refused as such before
    # stock or payment; then the nearest depot holding the whole cart (same query).
    wanted = [(ln["variant_id"], ln["quantity"]) for ln in lines]
    try:
        q = await delivery.quote(db=db, settings=settings, lat=req.lat, lng=req.lng, currency=cart.currency, now=now,
                                 stocked=wanted)
    except delivery.NoDepot:
        raise OutOfStock("not enough stock for this cart at any depot serving the address") from None
    start = req.window_start if req.window_start.tzinfo else req.window_start.replace(tzinfo=UTC)  # naive = UTC
    window = next((w for w in q.windows if w.start == start.astimezone(UTC)), None)
    if window is None:
        raise ValidationFailed("that delivery window is closed or does not exist; choose one of the open windows")

    customer_key = str(req.user_id) if req.user_id else req.email.strip().lower()
    # Every line's class and "standard" (delivery is taxed at it) in one query.
    rates = await tax_rates(db=db, country=req.country, region=req.region,
                            tax_classes=[ln["tax_class"] for ln in lines] + ["standard"])
    priced = [pricing.LineIn(ln["variant_id"], ln["quantity"], Decimal(ln["amount"]), ln["includes_tax"], rates[ln["tax_class"]])
              for ln in lines]
    goods = sum((money.round_money(p.unit_price * p.quantity, cart.currency) for p in priced), Decimal("0"))

    applied = None
    coupon_discount = Decimal("0")
    free_delivery = False
    if req.coupon:
        applied = await promotions.evaluate(db=db, code=req.coupon, currency=cart.currency, goods_total=goods, now=now,
                                            customer_key=customer_key)
    else:
        # No coupon: the best automatic promotion applies (one promotion per order, never stacked).
        applied = await promotions.best_automatic(db=db, currency=cart.currency, goods_total=goods, delivery_fee=q.fee,
                                                  now=now, customer_key=customer_key)
    if applied:
        coupon_discount, free_delivery = applied.discount, applied.free_delivery
    if req.user_id is not None:
        tier = await loyalty.status(db=db, settings=settings, user_id=req.user_id, now=now)
        free_delivery = free_delivery or "free_delivery" in tier["benefits"]
    points_discount = Decimal("0")
    if req.points:
        eur = loyalty.points_value(settings, req.points)
        points_discount = delivery.convert_fee(settings, eur, "EUR", cart.currency)
        if points_discount > goods - coupon_discount:
            raise ValidationFailed("those points are worth more than the goods; redeem fewer")
    fee = Decimal("0") if free_delivery else q.fee
    totals = pricing.compute(currency=cart.currency, lines=priced, coupon_discount=coupon_discount,
                             points_discount=points_discount, delivery_fee=fee,
                             delivery_tax_rate=rates["standard"])
    if req.expected_total is not None and money.round_money(req.expected_total, cart.currency) != totals.total:
        raise PriceChanged(f"prices changed: the total is now {totals.total} {cart.currency}")
    if req.payment_method == PaymentMethod.CARD and totals.total <= 0:
        raise ValidationFailed("nothing to pay by card; choose another payment method")

    by_variant = {ln["variant_id"]: ln for ln in lines}
    skills = sorted({s for ln in lines for s in (ln["skills"] or [])})
    weight = sum((Decimal(ln["weight_kg"]) * ln["quantity"] for ln in lines), Decimal("0"))
    volume = sum((Decimal(ln["volume_l"]) * ln["quantity"] for ln in lines), Decimal("0"))
    has_ambient = any("cold" not in (ln["skills"] or []) for ln in lines)
    order = Order(
        id=uuid.uuid4(), user_id=req.user_id, email=req.email.strip(), contact_name=req.name.strip(), phone=req.phone.strip(),
        status=OrderStatus.PLACED, payment_status=PaymentStatus.PENDING, delivery_status=DeliveryStatus.NOT_READY,
        payment_method=req.payment_method, currency=cart.currency, prices_include_tax=totals.prices_include_tax,
        subtotal=totals.subtotal, discount_total=totals.discount_total, delivery_fee=totals.delivery_fee,
        tax_total=totals.tax_total, total=totals.total, points_redeemed=req.points,
        promotion_id=applied.promotion.id if applied else None, coupon_code=applied.promotion.code if applied else None,
        campaign_id=applied.promotion.campaign_id if applied else "", address_text=req.address_text.strip(),
        country=req.country.upper(), region=req.region, location=f"SRID=4326;POINT({req.lng} {req.lat})",
        zone_id=q.zone.id, depot_id=q.depot.id, distance_m=q.distance_m, distance_source=q.distance_source,
        window_start=window.start, window_end=window.end, weight_kg=weight, volume_l=volume,
        parcels=orders.parcels_for(volume, skills, has_ambient), skills=skills,
        # Chilled goods go first: their cold chain has the tightest time budget.
        priority=1 if "cold" in skills else 0,
        checkout_key=req.checkout_key, request_hash=req.fingerprint(), cart_id=cart.id,
        tracking_token=secrets.token_urlsafe(18),
    )
    # Stock first: conditional updates in variant-id order (see the module doc), before any row of
    # the order exists, so the order's rows below go to the database in two flushes.
    for variant_id, qty in sorted(wanted):
        took = (await db.execute(text("""
            UPDATE stock SET quantity = quantity - :q
            WHERE variant_id = :v AND depot_id = :d AND quantity >= :q RETURNING quantity
        """), {"q": qty, "v": variant_id, "d": q.depot.id})).first()
        if took is None:
            raise OutOfStock(f"{by_variant[variant_id]['sku']} just sold out")
    db.add(order)
    await db.flush()  # its number (a sequence default) is in the timeline entry below
    for out in totals.lines:
        ln = by_variant[out.variant_id]
        db.add(OrderLine(order_id=order.id, variant_id=out.variant_id, sku=ln["sku"], name=ln["name"], quantity=out.quantity,
                         unit_price=out.unit_price, prices_include_tax=out.includes_tax, tax_rate=out.tax_rate,
                         discount=out.discount, net=out.net, tax=out.tax, gross=out.gross,
                         weight_kg=Decimal(ln["weight_kg"]), volume_l=Decimal(ln["volume_l"])))
    for variant_id, qty in sorted(wanted):
        db.add(StockReservation(order_id=order.id, variant_id=variant_id, depot_id=q.depot.id, quantity=qty))
    if applied:
        await promotions.redeem(db=db, applied=applied, order_id=order.id, customer_key=customer_key)
    if req.points and req.user_id is not None:
        await loyalty.redeem(db=db, user_id=req.user_id, order_id=order.id, points=req.points)
    cart.status = "ordered"  # a guest's cart already is (claimed so); a user's cart is updated here
    provider = {PaymentMethod.CARD: "stripe", PaymentMethod.CASH_ON_DELIVERY: "cash",
                PaymentMethod.BANK_TRANSFER: "bank_transfer"}[PaymentMethod(req.payment_method)]
    # A card payment is claimed for this request as it is created (SUBMITTING, see _pay_by_card): the
    # request that places the order is the one that calls the provider, and a separate claim
    # transaction would only confirm that. A retry that finds it SUBMITTING waits for this request's
    # answer, or takes the claim over once it is CLAIM_STALE_S old (the request died).
    tx = PaymentTransaction(id=uuid.uuid4(), order_id=order.id, provider=provider, method=req.payment_method,
                            currency=order.currency, amount=order.total,
                            status=TxStatus.SUBMITTING if provider == "stripe" else TxStatus.PENDING_OFFLINE,
                            idempotency_key=f"checkout:{req.checkout_key}")
    db.add(tx)
    await orders.add_event(db, order.id, "placed", f"Order {order.number} placed", total=str(order.total),
                           currency=order.currency, payment=req.payment_method)
    if req.payment_method == PaymentMethod.CASH_ON_DELIVERY:
        # Nothing to wait for: the driver collects, so the order goes to dispatch now (payload says how much).
        await orders.hand_to_dispatch(db=db, order=order, now=now)
    await db.flush()
    return order, tx


def _key_lock(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"checkout:{key}".encode(), digest_size=8).digest(), "big", signed=True)


async def _find(db: AsyncSession, key: str) -> Order | None:
    return (await db.execute(select(Order).where(Order.checkout_key == key))).scalar_one_or_none()


async def checkout(*, sessions: async_sessionmaker[AsyncSession], settings: Settings, provider: PaymentProvider,
                   req: CheckoutRequest, now: datetime | None = None) -> CheckoutResult:
    """Place the order (or find the one this key already placed) and take the card payment.

    `result.order` is the order as placed or found, not re-read after the payment: read it again
    (`orders.get`) to show its statuses.
    """
    now = now or datetime.now(UTC)
    if not req.checkout_key or len(req.checkout_key) > 128:
        raise ValidationFailed("send an Idempotency-Key header of 1..128 characters")
    created = False
    claimed = None
    try:
        async with sessions() as db, db.begin():
            # Same-key requests queue here until the first one commits, then find its order
            # (without this they would queue on the cart's row lock and find the cart already ordered).
            await db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key_lock(req.checkout_key)})
            order = await _find(db, req.checkout_key)
            if order is None:
                order, claimed = await place_order(db=db, settings=settings, req=req, now=now)
                created = True
    except IntegrityError as exc:
        # The advisory lock makes this unreachable for two requests with one key; kept so that, should
        # it happen, the loser reads the winner's order instead of failing (no savepoint needed: the
        # whole transaction rolled back and nothing of this request was written).
        if "checkout_key" not in str(exc.orig):
            raise
        order, created, claimed = None, False, None
    if order is None:
        async with sessions() as db:
            order = await _find(db, req.checkout_key)
        if order is None:
            raise Conflict("a checkout with this key is in progress; retry")
    if order.request_hash != req.fingerprint():
        raise IdempotencyMismatch("this Idempotency-Key was used for a different checkout")
    declined = view = None
    if order.payment_method == PaymentMethod.CARD:
        declined, view = await _pay_by_card(sessions=sessions, provider=provider, order_id=order.id, req=req, now=now,
                                            claimed=claimed if claimed is not None and claimed.provider == provider.name
                                            else None)
    return CheckoutResult(order=order, created=created, declined=declined, view=view)


CLAIM_STALE_S = 120.0  # a claim older than this was left by a request that died mid-call: it may be taken over
CLAIM_WAIT_S = 30.0  # how long a same-key retry waits for the request calling the provider before answering 503
CLAIM_POLL_S = 0.05


async def _claim(*, sessions: async_sessionmaker[AsyncSession], provider: PaymentProvider,
                 order_id: uuid.UUID) -> tuple[str, PaymentTransaction]:
    """One short transaction: decide what this request does about the card payment, and claim the call if it makes it.

    ("call", tx): we moved the transaction to SUBMITTING and must create the intent; ("retrieve", tx):
    an intent exists and is not final, ask the provider; ("done", tx): nothing to call; ("busy", tx):
    another request is calling the provider right now.
    """
    async with sessions() as db, db.begin():
        tx = (await db.execute(select(PaymentTransaction).where(PaymentTransaction.order_id == order_id,
                                                                PaymentTransaction.provider == provider.name)
                               .order_by(PaymentTransaction.created_at).limit(1).with_for_update())).scalar_one()
        now = datetime.now(UTC)
        if tx.provider_ref is None and (tx.status == TxStatus.CREATED or (
                tx.status == TxStatus.SUBMITTING and (now - tx.updated_at).total_seconds() > CLAIM_STALE_S)):
            tx.status = TxStatus.SUBMITTING
            tx.updated_at = now
            return "call", tx
        if tx.provider_ref is None and tx.status == TxStatus.SUBMITTING:
            return "busy", tx
        if tx.provider_ref is not None and tx.status not in (TxStatus.SUCCEEDED, TxStatus.FAILED, TxStatus.CANCELED):
            return "retrieve", tx
        return "done", tx


async def _pay_by_card(*, sessions: async_sessionmaker[AsyncSession], provider: PaymentProvider, order_id: uuid.UUID,
                       req: CheckoutRequest, now: datetime,
                       claimed: PaymentTransaction | None = None) -> tuple[str | None, dict[str, Any] | None]:
    """Take the card payment without holding a transaction (or a pooled connection) over the provider call.

    1. claim (short transaction, the payment row locked only for it): CREATED -> SUBMITTING; `claimed`
       is a transaction the caller's place_order created already SUBMITTING, so there is nothing to do. A
       same-key request that finds SUBMITTING waits (polling, no connection held) for the first
       one's answer instead of creating a second intent: localstripe ignores idempotency keys, so
       the claim is what makes one intent per order. A claim older than CLAIM_STALE_S (its request
       died mid-call) is taken over, with the same provider idempotency key (Stripe answers the
       first intent again).
    2. the provider call, with no transaction open.
    3. record (short transaction, row locked): apply the answer. The webhook may have applied the
       same intent meanwhile (it finds the row by the intent's metadata transaction_id);
       apply_intent and mark_paid are idempotent, so one charge gives one paid order either way.
    """
    deadline = datetime.now(UTC).timestamp() + CLAIM_WAIT_S
    while True:
        if claimed is not None:  # claimed when the order was placed, in the same transaction (place_order)
            action, tx = "call", claimed
            break
        action, tx = await _claim(sessions=sessions, provider=provider, order_id=order_id)
        if action != "busy":
            break
        if datetime.now(UTC).timestamp() > deadline:
            raise PaymentUnavailable("this checkout's payment is still being processed; retry with the same Idempotency-Key")
        await asyncio.sleep(CLAIM_POLL_S)
    if action == "done":
        return (tx.last_error or "payment failed" if tx.status == TxStatus.FAILED else None), None
    if action == "retrieve":
        intent = await provider.retrieve_intent(ref=tx.provider_ref or "")
        return await _record(sessions=sessions, tx_id=tx.id, intent=intent, source="checkout-retry", now=now)
    try:
        intent = await provider.create_intent(
            amount_minor=money.to_minor(tx.amount, tx.currency), currency=tx.currency,
            payment_method=req.payment_method_id or "", idempotency_key=tx.idempotency_key,
            metadata={"order_id": str(order_id), "transaction_id": str(tx.id)})
    except ProviderUnavailable as exc:
        # Nothing known to be charged: give the claim back, the order keeps its stock, and a retry with the same
        # key tries again (with the same provider idempotency key).
        async with sessions() as db, db.begin():
            locked = await payments.lock_transaction(db=db, tx_id=tx.id)
            if locked is not None and locked.status == TxStatus.SUBMITTING and locked.provider_ref is None:
                locked.status = TxStatus.CREATED
                locked.updated_at = datetime.now(UTC)
        raise PaymentUnavailable(f"{exc}; retry with the same Idempotency-Key") from None
    except PaymentDeclined as exc:
        async with sessions() as db, db.begin():
            locked = await payments.lock_transaction(db=db, tx_id=tx.id)
            assert locked is not None
            if locked.status in (TxStatus.SUBMITTING, TxStatus.CREATED):  # not already settled by a webhook
                locked.status = TxStatus.FAILED
                locked.last_error = str(exc)
                locked.updated_at = datetime.now(UTC)
                db.add(PaymentEvent(transaction_id=locked.id, provider_ref=exc.ref or f"declined:{locked.id}",
                                    type="declined", amount=locked.amount, data={"code": exc.code, "message": str(exc)}))
                order = await orders.get(db=db, order_id=order_id, lock=True)
                await orders.payment_failed(db=db, order=order, reason=str(exc))
                return str(exc), None
            return (locked.last_error or str(exc) if locked.status == TxStatus.FAILED else None), None
    return await _record(sessions=sessions, tx_id=tx.id, intent=intent, source="checkout", now=now,
                         location=(req.lat, req.lng))


async def _record(*, sessions: async_sessionmaker[AsyncSession], tx_id: uuid.UUID, intent, source: str,
                  now: datetime, location: tuple[float, float] | None = None) -> tuple[str | None, dict[str, Any] | None]:
    """Apply the provider's answer in one short transaction: (the error text if the payment failed, the order's view).

    The checkout's answer (orders.view) is read here, before the invoice number is taken: that
    saves the request a session of its own (a pool ping, BEGIN, the order read, ROLLBACK) and the
    counter row, which every paying transaction queues on, is still locked only for the last
    statement and the COMMIT. `location`: the order's (lat, lng), when the caller knows them.
    """
    async with sessions() as db, db.begin():
        tx = await payments.lock_transaction(db=db, tx_id=tx_id)
        assert tx is not None
        order = await orders.get(db=db, order_id=tx.order_id, lock=True)  # after tx: the lock order of apply_intent
        await payments.apply_intent(db=db, tx=tx, intent=intent, source=source, now=now, defer_invoice=True, order=order)
        view = await orders.view(db=db, order=order, location=location)
        if orders.invoice_due(order):
            await orders.number_invoice(db, order)  # last: see orders.mark_paid
            view["invoice_number"] = order.invoice_number
        return (tx.last_error or "payment failed" if tx.status == TxStatus.FAILED else None), view
