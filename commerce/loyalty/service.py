"""Loyalty: an append-only points ledger, tiers by rolling 12-month spend and order count, redemption at checkout.

A balance is the sum of the user's entries; nothing is ever updated in place. Every write
for a user first takes a transaction-scoped advisory lock on that user, so a redemption
cannot spend points that a concurrent redemption is spending too, and "credit once per
order" holds even if two consumers race.

Tiers and their benefits come from settings.commerce_loyalty_tiers
("name:min_spend_eur:min_orders:percent:benefit+benefit,..."); a customer is in the
highest tier whose spend AND order-count thresholds they meet. Points are worth
settings.commerce_point_value EUR each; "3 % back" on 100 EUR is 3 EUR = 300 points at 0.01.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from commerce.loyalty.models import LoyaltyEntry
from core.errors import ValidationFailed
from core.settings import Settings


@dataclass(frozen=True)
class Tier:
    name: str
    min_spend_eur: Decimal
    min_orders: int
    percent: Decimal
    benefits: frozenset[str]  # free_delivery, early_access


def tiers(settings: Settings) -> list[Tier]:
    """The configured tiers, lowest first."""
    out = []
    for part in settings.commerce_loyalty_tiers.split(","):
        name, spend, orders, pct, benefits = (part.strip().split(":") + [""] * 5)[:5]
        out.append(Tier(name, Decimal(spend or "0"), int(orders or 0), Decimal(pct or "0"),
                        frozenset(b for b in benefits.split("+") if b)))
    return sorted(out, key=lambda t: (t.min_spend_eur, t.min_orders))


def fx_to_eur(settings: Settings, amount: Decimal, currency: str) -> Decimal:
    """Convert to EUR with the configured rates (for tier thresholds and point value)."""
    if currency == "EUR":
        return amount
    rates = dict(kv.split("=") for kv in settings.commerce_fx_rates.split(",") if "=" in kv)
    if currency not in rates:
        raise ValidationFailed(f"no exchange rate for {currency}")
    return amount / Decimal(rates[currency])


def _lock_key(user_id: uuid.UUID) -> int:
    return int.from_bytes(hashlib.blake2b(f"loyalty:{user_id}".encode(), digest_size=8).digest(), "big", signed=True)


async def _lock(db: AsyncSession, user_id: uuid.UUID) -> None:
    await db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(user_id)})


async def balance(*, db: AsyncSession, user_id: uuid.UUID) -> int:
    """Points available now."""
    return int((await db.execute(select(func.coalesce(func.sum(LoyaltyEntry.points), 0))
                                 .where(LoyaltyEntry.user_id == user_id))).scalar_one())


async def status(*, db: AsyncSession, settings: Settings, user_id: uuid.UUID, now: datetime) -> dict:
    """Tier, rolling 12-month spend (EUR) and order count, balance, benefits."""
    rows = (await db.execute(text("""
        SELECT o.currency, sum(o.total - o.delivery_fee - coalesce(r.refunded, 0)) AS spend, count(*) AS n
        FROM orders o
        LEFT JOIN (SELECT order_id, sum(amount) AS refunded FROM refunds WHERE status = 'succeeded' GROUP BY order_id) r
               ON r.order_id = o.id
        WHERE o.user_id = :u AND o.paid_at >= :since AND o.status <> 'cancelled'
        GROUP BY o.currency
    """), {"u": user_id, "since": now - timedelta(days=365)})).all()
    spend = sum((fx_to_eur(settings, Decimal(r.spend), r.currency) for r in rows), Decimal("0"))
    orders = sum(r.n for r in rows)
    tier = tiers(settings)[0]
    for t in tiers(settings):
        if spend >= t.min_spend_eur and orders >= t.min_orders:
            tier = t
    return {"tier": tier.name, "percent": tier.percent, "benefits": sorted(tier.benefits),
            "spend_12m_eur": spend.quantize(Decimal("0.01")), "orders_12m": orders,
            "balance": await balance(db=db, user_id=user_id)}


def points_value(settings: Settings, points: int) -> Decimal:
    """EUR value of `points`."""
    return Decimal(points) * Decimal(settings.commerce_point_value)


async def redeem(*, db: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID, points: int) -> None:
    """Spend `points` on an order at checkout, or ValidationFailed if the balance is short."""
    if points <= 0:
        return
    await _lock(db, user_id)
    have = await balance(db=db, user_id=user_id)
    if have < points:
        raise ValidationFailed(f"not enough loyalty points: {have} available, {points} asked")
    db.add(LoyaltyEntry(user_id=user_id, order_id=order_id, kind="redeem", points=-points, note="spent at checkout"))
    await db.flush()


async def _sum(db: AsyncSession, order_id: uuid.UUID, kinds: tuple[str, ...]) -> int:
    return int((await db.execute(select(func.coalesce(func.sum(LoyaltyEntry.points), 0)).where(
        LoyaltyEntry.order_id == order_id, LoyaltyEntry.kind.in_(kinds)))).scalar_one())


async def restore(*, db: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID) -> int:
    """Give back the points an order spent (cancelled or unpaid); idempotent. Returns points restored."""
    await _lock(db, user_id)
    owed = -(await _sum(db, order_id, ("redeem", "restore")))
    if owed > 0:
        db.add(LoyaltyEntry(user_id=user_id, order_id=order_id, kind="restore", points=owed, note="order not completed"))
        await db.flush()
    return max(owed, 0)


async def credit_for_delivery(*, db: AsyncSession, settings: Settings, user_id: uuid.UUID, order_id: uuid.UUID,
                              spend: Decimal, currency: str, now: datetime) -> int:
    """Credit the tier's percentage of `spend` once per order when its delivery completes. Returns points."""
    await _lock(db, user_id)
    if await _sum(db, order_id, ("earn",)) > 0:
        return 0
    st = await status(db=db, settings=settings, user_id=user_id, now=now)
    value_eur = fx_to_eur(settings, spend, currency) * Decimal(st["percent"]) / Decimal(100)
    points = int((value_eur / Decimal(settings.commerce_point_value)).to_integral_value(rounding=ROUND_FLOOR))
    if points > 0:
        db.add(LoyaltyEntry(user_id=user_id, order_id=order_id, kind="earn", points=points,
                            note=f"{st['tier']} {st['percent']} % of {spend} {currency}"))
        await db.flush()
    return points


async def reverse_for_refund(*, db: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID, refunded: Decimal,
                             spend: Decimal) -> int:
    """Take back earned points in proportion to the refunded share of the spend (never more than earned)."""
    await _lock(db, user_id)
    earned = await _sum(db, order_id, ("earn",))
    if earned <= 0 or spend <= 0:
        return 0
    already = -(await _sum(db, order_id, ("reverse",)))
    share = min(Decimal(1), refunded / spend)
    target = int((Decimal(earned) * share).to_integral_value(rounding=ROUND_FLOOR))
    take = min(target, earned) - already
    if take > 0:
        db.add(LoyaltyEntry(user_id=user_id, order_id=order_id, kind="reverse", points=-take,
                            note=f"refund of {refunded}"))
        await db.flush()
    return max(take, 0)


async def history(*, db: AsyncSession, user_id: uuid.UUID, limit: int = 100) -> list[LoyaltyEntry]:
    return list((await db.execute(select(LoyaltyEntry).where(LoyaltyEntry.user_id == user_id)
                                  .order_by(LoyaltyEntry.id.desc()).limit(limit))).scalars())
