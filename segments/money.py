"""Money as exact integers: 1 unit = 1/10000 of the currency unit.

Amounts arrive as JSON numbers or decimal strings; msgspec decodes both into a
`Decimal` without float rounding, and this module turns them into integer units.
Sub-unit digits (beyond four decimals) are rounded half-to-even, since a
computed price such as 100/3 should not send an order to the dead-letter topic.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MONEY_SCALE = 10_000
MAX_AMOUNT = Decimal(10) ** 11
"""Largest accepted single amount, in currency units; keeps every sum in int64."""


_ZERO = Decimal(0)


def amount_problem(amount: Decimal) -> str | None:
    """Say why `amount` is not an acceptable money amount, or None when it is."""
    if amount.is_finite() and _ZERO <= amount <= MAX_AMOUNT:  # Decimal to Decimal: no conversion
        return None
    if not amount.is_finite():
        return f"{amount} is not a finite amount"
    if amount < 0:
        return f"{amount} is negative"
    if amount > MAX_AMOUNT:
        return f"{amount} is larger than {MAX_AMOUNT}"
    return None


def money_from_decimal(amount: Decimal) -> int:
    """Convert a finite Decimal to integer units, rounding half-to-even."""
    numerator, denominator = amount.as_integer_ratio()
    if denominator == 1:
        return numerator * MONEY_SCALE
    return divide_half_even(numerator * MONEY_SCALE, denominator)


def divide_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded to the nearest int, ties to even."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def money_from_json(value: object) -> int:
    """Convert a JSON number or decimal string to units; ValueError when it is neither.

    Negative amounts are accepted here (definitions compare against net totals,
    which can be negative); events reject them separately via `amount_problem`.
    """
    amount = _as_decimal(value)
    if not amount.is_finite() or abs(amount) > MAX_AMOUNT:
        raise ValueError(f"{value!r} is not a usable amount")
    return money_from_decimal(amount)


def _as_decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"expected a number or a decimal string, got {value!r}")
    text = repr(value) if isinstance(value, float) else value
    try:
        return Decimal(text.strip() if isinstance(text, str) else text)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None


def money_to_decimal(units: int) -> Decimal:
    """Exact Decimal value of `units`."""
    return Decimal(units).scaleb(-4)


def money_to_float(units: int) -> float:
    """Nearest float, for JSON views and metrics."""
    return units / MONEY_SCALE


def money_to_str(units: int) -> str:
    """Decimal string with at least two and at most four decimals: 1250000 -> "125.00"."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), MONEY_SCALE)
    decimals = f"{frac:04d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{decimals}"
