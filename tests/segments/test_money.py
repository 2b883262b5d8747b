"""Money: exact integer units from JSON numbers and decimal strings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from segments.money import (
    MONEY_SCALE,
    amount_problem,
    divide_half_even,
    money_from_decimal,
    money_from_json,
    money_to_decimal,
    money_to_float,
    money_to_str,
)


@pytest.mark.parametrize(("value", "units"), [
    (12, 120_000),
    (12.5, 125_000),
    ("12.50", 125_000),
    (" 12.5 ", 125_000),
    (0.1, 1_000),
    ("0.0001", 1),
    ("0.00005", 0),  # half-to-even
    ("0.00015", 2),
    ("-3.25", -32_500),
    ("1e2", 1_000_000),
    (Decimal("7.77"), 77_700),
])
def test_money_from_json(value: object, units: int) -> None:
    assert money_from_json(value) == units


@pytest.mark.parametrize("value", [True, None, [], "12,5", "abc", "NaN", "inf", float("nan"),
                                   "1e300"])
def test_money_from_json_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        money_from_json(value)


def test_float_input_is_taken_at_its_shortest_decimal() -> None:
    assert money_from_json(0.1 + 0.2) == money_from_decimal(Decimal("0.30000000000000004"))
    assert money_from_json(19.99) == 199_900


def test_amount_problem() -> None:
    assert amount_problem(Decimal("1.5")) is None
    assert amount_problem(Decimal(0)) is None
    assert "finite" in str(amount_problem(Decimal("NaN")))
    assert "negative" in str(amount_problem(Decimal("-0.01")))
    assert "larger" in str(amount_problem(Decimal("1e12")))


def test_divide_half_even() -> None:
    assert [divide_half_even(n, 2) for n in (1, 3, 5, -1, -3)] == [0, 2, 2, 0, -2]
    assert divide_half_even(10, 3) == 3
    assert divide_half_even(-10, 3) == -3
    assert divide_half_even(20, 3) == 7


def test_conversions_out() -> None:
    assert MONEY_SCALE == 10_000
    assert money_to_str(1_250_000) == "125.00"
    assert money_to_str(1) == "0.0001"
    assert money_to_str(-15_000) == "-1.50"
    assert money_to_float(125_000) == 12.5
    assert money_to_decimal(125_001) == Decimal("12.5001")
