from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supplyflow.codecs.quantity import MAX_ABS_UNITS, format_qty, parse_qty, qty_to_json


@pytest.mark.parametrize(
    ("value", "milli"),
    [
        (12, 12000),
        (12.5, 12500),
        ("12.500", 12500),
        ("12.5", 12500),
        ("0.001", 1),
        (0.1, 100),
        ("12.5000", 12500),  # trailing zeros are not extra precision
        (Decimal("3.141"), 3141),
        (999_999_999_999.999, 999_999_999_999_999),
    ],
)
def test_number_and_decimal_string_mean_the_same_exact_value(value: object, milli: int) -> None:
    assert parse_qty(value) == milli


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "negative"),
        ("-0.5", "negative"),
        (1.0005, "3 decimals"),
        ("1.0005", "3 decimals"),
        (True, "boolean"),
        (None, "number or a decimal string"),
        ([1], "number or a decimal string"),
        ("1e3", "decimal string"),
        ("abc", "decimal string"),
        ("", "decimal string"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (MAX_ABS_UNITS, "magnitude"),
        (1e300, "magnitude"),
        ("9" * 40, "decimal string"),
    ],
)
def test_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_qty(value)


def test_signed_allows_negative() -> None:
    assert parse_qty("-1.5", signed=True) == -1500
    assert parse_qty(-3, signed=True) == -3000


@given(st.integers(min_value=-(MAX_ABS_UNITS * 1000) + 1, max_value=MAX_ABS_UNITS * 1000 - 1))
def test_every_quantity_survives_json_float_and_string(milli: int) -> None:
    assert parse_qty(format_qty(milli), signed=True) == milli
    assert parse_qty(qty_to_json(milli), signed=True) == milli


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=200))
def test_sums_of_thousandths_do_not_drift(values: list[int]) -> None:
    total = sum(parse_qty(format_qty(v)) for v in values)
    assert Decimal(format_qty(total)) == sum(Decimal(v) / 1000 for v in values)


def _slow(value: object, signed: bool) -> int | str:
    """The Decimal path alone (the fast path switched off), or its error."""
    from supplyflow.codecs import quantity

    original = quantity._fast_milli
    quantity._fast_milli = lambda _value: None  # type: ignore[assignment]
    try:
        return quantity.parse_qty(value, signed=signed)
    except ValueError as exc:
        return f"error: {exc}"
    finally:
        quantity._fast_milli = original


def _fast(value: object, signed: bool) -> int | str:
    try:
        return parse_qty(value, signed=signed)
    except ValueError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    "value",
    [
        0,
        7,
        -7,
        10**12 - 1,
        10**12,
        -(10**12),
        True,
        "0",
        "12",
        "12.5",
        "12.500",
        "12.5000",
        "12.",
        ".5",
        "-5",
        " 12",
        "00012",
        "٣",
        "1²",
        "999999999999.999",
        "1000000000000",
        "12345678901234",
        "1.2345",
        "",
        "1e3",
        2.25,
        "12.05",
        "0.001",
    ],
)
def test_the_fast_path_answers_as_the_decimal_parser(value: object, signed: bool) -> None:
    assert _fast(value, signed) == _slow(value, signed)


def test_sums_beyond_the_float_range_are_exact_json_numbers() -> None:
    import orjson

    for milli, text in [
        (10**15, b"1000000000000"),
        (-(10**15) - 500, b"-1000000000000.5"),
        (2**80 * 1000 + 125, b"1208925819614629174706176.125"),
    ]:
        assert orjson.dumps(qty_to_json(milli)) == text
    assert qty_to_json(10**15 - 1) == 999_999_999_999.999


@given(st.integers(min_value=-(MAX_ABS_UNITS * 1000) + 1, max_value=MAX_ABS_UNITS * 1000 - 1))
def test_a_fractional_quantity_is_written_as_its_exact_decimal_text(milli: int) -> None:
    import orjson

    written = orjson.dumps(qty_to_json(milli)).decode()
    assert Decimal(written) == Decimal(milli).scaleb(-3)
    assert written == (format_qty(milli) if milli % 1000 else str(milli // 1000))
