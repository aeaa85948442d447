"""Money rules without a database: rounding, VAT inclusive and exclusive, discounts spread over lines."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from commerce import money
from commerce.checkout import pricing


def test_rounding_is_half_up_to_the_currency_minor_unit():
    assert money.round_money(D("0.125"), "EUR") == D("0.13")
    assert money.round_money(D("0.124"), "EUR") == D("0.12")
    assert money.round_money(D("149.5"), "JPY") == D("150")
    assert money.to_minor(D("12.34"), "EUR") == 1234
    with pytest.raises(ValueError):
        money.to_minor(D("12.345"), "EUR")
    with pytest.raises(money.CurrencyError):
        money.round_money(D(1), "XXX")


def test_vat_is_taken_out_of_inclusive_prices_per_line():
    t = pricing.compute(currency="EUR", lines=[pricing.LineIn(1, 2, D("24.90"), True, D("0.255")),
                                               pricing.LineIn(2, 3, D("1.99"), True, D("0.14"))],
                        delivery_fee=D("4.90"), delivery_tax_rate=D("0.255"))
    first, second = t.lines
    assert (first.gross, first.tax, first.net) == (D("49.80"), D("10.12"), D("39.68"))
    assert (second.gross, second.tax) == (D("5.97"), D("0.73"))
    assert t.delivery_fee == D("4.90") and t.delivery_tax == D("1.00")
    assert t.total == D("60.67") and t.tax_total == D("11.85")
    assert t.prices_include_tax


def test_vat_is_added_to_exclusive_prices():
    t = pricing.compute(currency="EUR", lines=[pricing.LineIn(1, 1, D("100.00"), False, D("0.19"))],
                        delivery_fee=D("5.00"), delivery_tax_rate=D("0.19"))
    assert (t.lines[0].net, t.lines[0].tax, t.lines[0].gross) == (D("100.00"), D("19.00"), D("119.00"))
    assert t.total == D("124.95") and not t.prices_include_tax


def test_a_discount_is_spread_over_lines_and_taxed_where_it_lands():
    t = pricing.compute(currency="EUR", lines=[pricing.LineIn(1, 1, D("30.00"), True, D("0.255")),
                                               pricing.LineIn(2, 1, D("10.00"), True, D("0.14"))],
                        coupon_discount=D("10.00"))
    assert [ln.discount for ln in t.lines] == [D("7.50"), D("2.50")]
    assert sum(ln.discount for ln in t.lines) == t.discount_total == D("10.00")
    assert [ln.gross for ln in t.lines] == [D("22.50"), D("7.50")]
    assert t.total == D("30.00")


def test_discounts_never_exceed_the_goods():
    t = pricing.compute(currency="EUR", lines=[pricing.LineIn(1, 1, D("5.00"), True, D("0.255"))],
                        coupon_discount=D("4.00"), points_discount=D("9.00"), delivery_fee=D("3.00"),
                        delivery_tax_rate=D("0.255"))
    assert (t.coupon_discount, t.points_discount) == (D("4.00"), D("1.00"))
    assert t.total == D("3.00")


def test_allocation_puts_the_rounding_remainder_on_the_largest_line():
    parts = money.allocate(D("0.10"), [D("1"), D("1"), D("1")], "EUR")
    assert sum(parts) == D("0.10")
