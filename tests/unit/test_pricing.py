"""The pricing engine against the revenue model's reference amounts and hand-computed volumes."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.model_loader import load_models
from billing.pricing import LineKind, quote

MODELS = load_models()

# ../shared/design/revenue-model.md, "Reference checks": (product, calls, total in cents).
REVENUE_MODEL_REFERENCE = [
    ("free", 100, 0),
    ("developer", 100, 0),
    ("developer", 1_100, 200),
    ("payg", 10_000, 1_500),
    ("basic", 50_000, 1_495),
    ("standard", 100_000, 8_995),
    ("standard", 200_000, 18_995),
    ("pro", 600_000, 50_995),
    ("enterprise", 1, 74_995),
    ("enterprise", 3_000_001, 224_985),
]

# Worked by hand from the price list: boundaries of included calls and blocks, 0, 1, huge.
HAND_COMPUTED = [
    ("free", 0, 0),
    ("developer", 0, 0),
    ("developer", 101, 0),  # 0.2 cents rounds to 0
    ("developer", 103, 1),  # 0.6 cents rounds to 1
    ("developer", 350, 50),  # 250 calls at 0.2 cents
    ("payg", 0, 0),
    ("payg", 1, 0),  # 0.15 cents
    ("payg", 10, 2),  # 1.5 cents: half rounds up
    ("payg", 30, 5),  # 4.5 cents: half rounds up
    ("payg", 1_000_000_000_000, 150_000_000_000),
    ("basic", 0, 1_495),
    ("standard", 0, 8_995),
    ("standard", 100_001, 8_995),  # 0.1 cent over
    ("standard", 100_005, 8_996),  # 0.5 cent over: half rounds up
    ("pro", 500_000, 44_995),
    ("pro", 500_009, 44_996),  # 0.54 cents
    ("enterprise", 0, 74_995),  # one block is always billed
    ("enterprise", 1_500_000, 74_995),
    ("enterprise", 1_500_001, 149_990),
    ("enterprise", 3_000_000, 149_990),
    ("enterprise", 4_500_001, 299_980),
]


@pytest.mark.parametrize(("product_id", "calls", "total"), REVENUE_MODEL_REFERENCE + HAND_COMPUTED)
def test_total_matches_price_list(product_id: str, calls: int, total: int) -> None:
    assert quote(MODELS.product(product_id), calls).total == total


def test_every_product_is_covered_by_the_reference_checks() -> None:
    assert {pid for pid, _, _ in REVENUE_MODEL_REFERENCE} == set(MODELS.ids)


def test_lines_split_flat_fee_and_usage() -> None:
    lines = quote(MODELS.product("standard"), 200_000).lines
    assert [(line.kind, line.quantity, line.amount) for line in lines] == [
        (LineKind.FLAT_FEE, 1, 8_995),
        (LineKind.USAGE, 100_000, 10_000),
    ]
    enterprise = quote(MODELS.product("enterprise"), 3_000_001).lines
    assert [(line.kind, line.quantity, line.amount) for line in enterprise] == [
        (LineKind.FLAT_FEE, 1, 74_995),
        (LineKind.USAGE, 2, 149_990),
    ]
    assert quote(MODELS.product("free"), 100).lines == ()


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True, None])
def test_rejects_calls_that_are_not_a_whole_number(bad: object) -> None:
    with pytest.raises(ValueError, match="whole number"):
        quote(MODELS.product("payg"), bad)  # type: ignore[arg-type]


products = st.sampled_from(MODELS.products)
calls = st.integers(min_value=0, max_value=10**13)


@given(products, calls, st.integers(min_value=0, max_value=10**9))
def test_total_never_decreases_as_calls_grow(product, base, extra) -> None:  # type: ignore[no-untyped-def]
    assert quote(product, base + extra).total >= quote(product, base).total >= 0


@given(products, calls)
def test_usage_line_is_exact_to_the_cent(product, n) -> None:  # type: ignore[no-untyped-def]
    usage = [line for line in quote(product, n).lines if line.kind is LineKind.USAGE]
    if product.usage_price is None:
        assert usage == []
        return
    (line,) = usage
    overage = max(0, n - product.included_calls)
    price_cents = Fraction(str(product.usage_price.amount)) * 100
    if product.block_size:
        expected = math.ceil(Fraction(overage, product.block_size)) * price_cents
    else:
        expected = price_cents * overage / product.usage_price.per_calls
    # One rounding per line: within half a cent of the exact amount, halves rounded up.
    assert expected - Fraction(1, 2) < line.amount <= expected + Fraction(1, 2)
