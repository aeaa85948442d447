"""Promotion use cases: create, validate a coupon against a basket, redeem under caps, void on cancellation.

Caps are enforced in the database, not by reading and then writing: the global cap is a
conditional `UPDATE ... SET redemptions = redemptions + 1 WHERE redemptions < global_cap`
(a CHECK constraint backs it up), and the per-customer cap counts under a
transaction-scoped advisory lock on (promotion, customer), so two simultaneous checkouts
by one customer cannot both squeeze under the cap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from commerce import money
from commerce.promotions.models import Promotion, Redemption
from core.errors import Conflict, NotFound, ValidationFailed

KINDS = ("percentage", "fixed", "free_delivery")


class CouponRefused(ValidationFailed):
    code = "coupon_refused"


@dataclass(frozen=True)
class Applied:
    promotion: Promotion
    discount: Decimal  # off the goods, in the basket's currency
    free_delivery: bool


async def create(*, db: AsyncSession, name: str, kind: str, value: Decimal = Decimal("0"), code: str | None = None,
                 currency: str | None = None, min_spend: Decimal | None = None, starts_at: datetime | None = None,
                 ends_at: datetime | None = None, global_cap: int | None = None, per_customer_cap: int | None = None,
                 campaign_id: str = "") -> Promotion:
    """A promotion (a coupon when `code` is given)."""
    if kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}")
    if kind == "percentage" and not (Decimal(0) < Decimal(value) <= Decimal(100)):
        raise ValidationFailed("a percentage must be in (0, 100]")
    if (kind == "fixed" or min_spend is not None) and not currency:
        raise ValidationFailed("fixed amounts and minimum spends need a currency")
    if code and (await db.execute(select(Promotion.id).where(func.upper(Promotion.code) == code.upper()))).first():
        raise Conflict(f"coupon code {code!r} exists")
    promo = Promotion(name=name, kind=kind, value=Decimal(value), code=code.upper() if code else None,
                      currency=money.check_currency(currency) if currency else None, min_spend=min_spend,
                      starts_at=starts_at, ends_at=ends_at, global_cap=global_cap, per_customer_cap=per_customer_cap,
                      campaign_id=campaign_id)
    db.add(promo)
    await db.flush()
    return promo


async def evaluate(*, db: AsyncSession, code: str, currency: str, goods_total: Decimal, now: datetime,
                   customer_key: str) -> Applied:
    """The discount coupon `code` gives a basket, or CouponRefused saying why not (nothing is reserved)."""
    promo = (await db.execute(select(Promotion).where(Promotion.code == code.strip().upper()))).scalar_one_or_none()
    if promo is None or not promo.active:
        raise CouponRefused(f"coupon {code!r} is not valid")
    return await _evaluate(db, promo, currency=currency, goods_total=goods_total, now=now, customer_key=customer_key)


async def _evaluate(db: AsyncSession, promo: Promotion, *, currency: str, goods_total: Decimal, now: datetime,
                    customer_key: str) -> Applied:
    code = promo.code or promo.name
    if promo.starts_at and now < promo.starts_at:
        raise CouponRefused(f"coupon {code!r} is not valid yet")
    if promo.ends_at and now >= promo.ends_at:
        raise CouponRefused(f"coupon {code!r} has expired")
    if promo.currency and promo.currency != currency and (promo.kind == "fixed" or promo.min_spend is not None):
        raise CouponRefused(f"coupon {code!r} applies to {promo.currency} baskets only")
    if promo.min_spend is not None and goods_total < promo.min_spend:
        raise CouponRefused(f"coupon {code!r} needs a minimum spend of {promo.min_spend} {promo.currency}")
    if promo.global_cap is not None and promo.redemptions >= promo.global_cap:
        raise CouponRefused(f"coupon {code!r} has been used up")
    if promo.per_customer_cap is not None and await _used_by(db, promo.id, customer_key) >= promo.per_customer_cap:
        raise CouponRefused(f"you have already used coupon {code!r}")
    if promo.kind == "percentage":
        discount = money.round_money(goods_total * promo.value / Decimal(100), currency)
    elif promo.kind == "fixed":
        discount = min(money.round_money(promo.value, currency), goods_total)
    else:
        discount = Decimal("0")
    return Applied(promotion=promo, discount=discount, free_delivery=promo.kind == "free_delivery")


async def best_automatic(*, db: AsyncSession, currency: str, goods_total: Decimal, delivery_fee: Decimal, now: datetime,
                         customer_key: str) -> Applied | None:
    """The automatic promotion (no code) worth most to this basket right now, if any applies."""
    candidates = (await db.execute(select(Promotion).where(
        Promotion.code.is_(None), Promotion.active,
        (Promotion.starts_at.is_(None)) | (Promotion.starts_at <= now),
        (Promotion.ends_at.is_(None)) | (Promotion.ends_at > now)).order_by(Promotion.id))).scalars().all()
    best: tuple[Decimal, Applied] | None = None
    for promo in candidates:
        try:
            applied = await _evaluate(db, promo, currency=currency, goods_total=goods_total, now=now,
                                      customer_key=customer_key)
        except CouponRefused:
            continue
        worth = applied.discount + (delivery_fee if applied.free_delivery else Decimal("0"))
        if worth > 0 and (best is None or worth > best[0]):
            best = (worth, applied)
    return best[1] if best else None


async def _used_by(db: AsyncSession, promotion_id: int, customer_key: str) -> int:
    return (await db.execute(select(func.count()).select_from(Redemption).where(
        Redemption.promotion_id == promotion_id, Redemption.customer_key == customer_key,
        Redemption.voided.is_(False)))).scalar_one()


def _lock_key(promotion_id: int, customer_key: str) -> int:
    digest = hashlib.blake2b(f"promo:{promotion_id}:{customer_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def redeem(*, db: AsyncSession, applied: Applied, order_id, customer_key: str) -> Redemption:
    """Count one use of the promotion for `order_id`, inside the checkout's transaction, or CouponRefused."""
    promo = applied.promotion
    if promo.per_customer_cap is not None:
        await db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(promo.id, customer_key)})
        if await _used_by(db, promo.id, customer_key) >= promo.per_customer_cap:
            raise CouponRefused(f"you have already used {promo.code or promo.name!r}")
    taken = (await db.execute(
        update(Promotion).where(Promotion.id == promo.id,
                                (Promotion.global_cap.is_(None)) | (Promotion.redemptions < Promotion.global_cap))
        .values(redemptions=Promotion.redemptions + 1).returning(Promotion.id))).first()
    if taken is None:
        raise CouponRefused(f"{promo.code or promo.name!r} has been used up")
    red = Redemption(promotion_id=promo.id, order_id=order_id, customer_key=customer_key, amount=applied.discount)
    db.add(red)
    await db.flush()
    return red


async def void(*, db: AsyncSession, order_id) -> None:
    """Give a cancelled order's redemption back to the caps (idempotent)."""
    red = (await db.execute(select(Redemption).where(Redemption.order_id == order_id, Redemption.voided.is_(False))
                            .with_for_update())).scalar_one_or_none()
    if red is None:
        return
    red.voided = True
    await db.execute(update(Promotion).where(Promotion.id == red.promotion_id)
                     .values(redemptions=Promotion.redemptions - 1))


async def campaign_report(*, db: AsyncSession) -> list[dict]:
    """Per campaign: orders, discount given and revenue of paid orders (for ROI)."""
    rows = (await db.execute(text("""
        SELECT o.campaign_id, o.currency, count(*) AS orders, sum(o.discount_total) AS discount,
               sum(o.total) AS revenue
        FROM orders o
        WHERE o.campaign_id <> '' AND o.payment_status IN ('paid', 'partially_refunded')
        GROUP BY o.campaign_id, o.currency ORDER BY o.campaign_id
    """))).mappings().all()
    return [dict(r) for r in rows]


async def get(*, db: AsyncSession, promotion_id: int) -> Promotion:
    promo = await db.get(Promotion, promotion_id)
    if promo is None:
        raise NotFound(f"promotion {promotion_id} not found")
    return promo
