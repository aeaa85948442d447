"""Money: Decimal amounts, per-currency minor units and the one rounding rule of the shop.

Every amount is a `Decimal`; floats never touch money. Rounding is explicit and happens
in one place: `round_money` quantises to the currency's minor unit with ROUND_HALF_UP
(the rule consumers expect on a receipt; banker's rounding would surprise them).
Totals are sums of already-rounded line amounts, so a receipt always adds up.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 minor units of the currencies we price in; unknown currencies are refused.
MINOR_UNITS: dict[str, int] = {"EUR": 2, "SEK": 2, "NOK": 2, "DKK": 2, "USD": 2, "GBP": 2, "JPY": 0}
ZERO = Decimal("0")


class CurrencyError(ValueError):
    """A currency we do not price in."""


def check_currency(currency: str) -> str:
    """The upper-case ISO code, or CurrencyError."""
    code = currency.upper()
    if code not in MINOR_UNITS:
        raise CurrencyError(f"currency {currency!r} is not supported (one of {', '.join(sorted(MINOR_UNITS))})")
    return code


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS[check_currency(currency)])


def round_money(amount: Decimal | int | str, currency: str) -> Decimal:
    """`amount` rounded half-up to the currency's minor unit."""
    return Decimal(amount).quantize(quantum(currency), rounding=ROUND_HALF_UP)


def to_minor(amount: Decimal, currency: str) -> int:
    """Amount in minor units (cents) as payment providers want it; the amount must already be rounded."""
    rounded = round_money(amount, currency)
    if rounded != amount:
        raise ValueError(f"{amount} {currency} is not rounded to the minor unit")
    return int(rounded.scaleb(MINOR_UNITS[check_currency(currency)]))


def from_minor(minor: int, currency: str) -> Decimal:
    return round_money(Decimal(minor).scaleb(-MINOR_UNITS[check_currency(currency)]), currency)


def allocate(total: Decimal, weights: list[Decimal], currency: str) -> list[Decimal]:
    """Split `total` over `weights` proportionally, each part rounded, the remainder on the largest weight.

    Used to spread an order-level discount over its lines so tax is computed per line
    on what the customer actually pays for that line.
    """
    if not weights:
        return []
    whole = sum(weights, ZERO)
    if whole == 0:
        return [ZERO for _ in weights]
    parts = [round_money(total * w / whole, currency) for w in weights]
    biggest = max(range(len(weights)), key=lambda i: weights[i])
    parts[biggest] += total - sum(parts, ZERO)
    return parts


def plain(value):  # noqa: ANN001, ANN201 - any JSON-ish structure
    """Decimals to strings (never floats), recursively, for API answers: "12.90" stays "12.90"."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
