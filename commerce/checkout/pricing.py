"""Totals of a basket: discounts spread over lines, VAT per line (inclusive or exclusive prices), delivery fee.

Pure functions over Decimals, so the rules can be read and tested without a database.
Order of operations, and why:
1. A line's base amount is unit price × quantity, in the price's own convention (with or
   without VAT).
2. Order-level discounts (coupon, then loyalty points) are allocated over the lines in
   proportion to their base amounts (`money.allocate`), so VAT is charged on what the
   customer actually pays for each line — as tax authorities require for discounts
   granted at the time of sale.
3. VAT per line, rounded per line (half-up): inclusive: tax = amount × r / (1 + r);
   exclusive: tax = amount × r. Totals are sums of rounded lines, so they add up on the
   invoice.
4. The delivery fee is taxed at the destination's standard rate, in the same convention
   as the goods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from commerce import money

ZERO = Decimal("0")


@dataclass(frozen=True)
class LineIn:
    variant_id: int
    quantity: int
    unit_price: Decimal
    includes_tax: bool
    tax_rate: Decimal  # 0.255 for 25.5 %


@dataclass
class LineOut:
    variant_id: int
    quantity: int
    unit_price: Decimal
    includes_tax: bool
    tax_rate: Decimal
    base: Decimal
    discount: Decimal
    net: Decimal
    tax: Decimal
    gross: Decimal


@dataclass
class Totals:
    currency: str
    lines: list[LineOut]
    subtotal: Decimal  # sum of bases (before discounts)
    coupon_discount: Decimal
    points_discount: Decimal
    delivery_fee: Decimal  # gross
    delivery_tax: Decimal
    tax_total: Decimal
    total: Decimal
    prices_include_tax: bool
    notes: list[str] = field(default_factory=list)

    @property
    def discount_total(self) -> Decimal:
        return self.coupon_discount + self.points_discount


def _tax(amount: Decimal, rate: Decimal, includes_tax: bool, currency: str) -> tuple[Decimal, Decimal, Decimal]:
    """(net, tax, gross) of `amount`."""
    if includes_tax:
        tax = money.round_money(amount * rate / (1 + rate), currency)
        return amount - tax, tax, amount
    tax = money.round_money(amount * rate, currency)
    return amount, tax, amount + tax


def compute(*, currency: str, lines: list[LineIn], coupon_discount: Decimal = ZERO, points_discount: Decimal = ZERO,
            delivery_fee: Decimal = ZERO, delivery_tax_rate: Decimal = ZERO) -> Totals:
    """Price a basket. Discounts are capped at the goods' amount; the fee is given in the goods' convention."""
    cur = money.check_currency(currency)
    bases = [money.round_money(ln.unit_price * ln.quantity, cur) for ln in lines]
    subtotal = sum(bases, ZERO)
    coupon = min(money.round_money(coupon_discount, cur), subtotal)
    points = min(money.round_money(points_discount, cur), subtotal - coupon)
    shares = money.allocate(coupon + points, bases, cur)
    out = []
    for ln, base, share in zip(lines, bases, shares, strict=True):
        net, tax, gross = _tax(base - share, ln.tax_rate, ln.includes_tax, cur)
        out.append(LineOut(ln.variant_id, ln.quantity, money.round_money(ln.unit_price, cur), ln.includes_tax,
                           ln.tax_rate, base, share, net, tax, gross))
    inclusive = all(ln.includes_tax for ln in lines) if lines else True
    fee = money.round_money(delivery_fee, cur)
    _, fee_tax, fee_gross = _tax(fee, delivery_tax_rate, inclusive, cur)
    tax_total = sum((o.tax for o in out), ZERO) + fee_tax
    total = sum((o.gross for o in out), ZERO) + fee_gross
    return Totals(cur, out, subtotal, coupon, points, fee_gross, fee_tax, tax_total, total, inclusive)
