"""The pure parts: Band values, cover(), plan_bands() and parse_size()."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from avgstack import BudgetError, UsageError
from avgstack.planning import parse_size, plan_bands
from avgstack.windows import Band, cover

# -- Band -------------------------------------------------------------------------


def test_band_is_a_frozen_value_with_stop_and_slice():
    band = Band(3, 4)
    assert band.stop == 7
    assert list(range(10))[band.toslice()] == [3, 4, 5, 6]
    assert band == Band(3, 4) and hash(band) == hash(Band(3, 4))
    with pytest.raises(AttributeError):
        band.start = 5  # type: ignore[misc]


@pytest.mark.parametrize("start, height", [(-1, 3), (0, 0), (2, -4)])
def test_band_rejects_negative_start_and_empty_height(start, height):
    with pytest.raises(ValueError):
        Band(start, height)


@pytest.mark.parametrize(
    "band, rows, expected",
    [
        (Band(10, 5), (0, 10), None),  # touching is not overlapping
        (Band(10, 5), (15, 20), None),
        (Band(10, 5), (12, 30), (12, 15)),
        (Band(10, 5), (0, 11), (10, 11)),
        (Band(10, 5), (11, 13), (11, 13)),
    ],
)
def test_band_intersection(band, rows, expected):
    assert band.intersection(*rows) == expected


@settings(deadline=None, derandomize=True)
@given(st.integers(1, 5000), st.integers(1, 6000))
def test_cover_partitions_rows_in_order(height, band_height):
    bands = cover(height, band_height)
    assert bands[0].start == 0 and bands[-1].stop == height
    for a, b in zip(bands, bands[1:]):
        assert a.stop == b.start
        assert a.height == band_height
    assert 0 < bands[-1].height <= band_height
    assert len(bands) == math.ceil(height / band_height)


@pytest.mark.parametrize("height, band_height", [(0, 5), (5, 0), (-1, 1)])
def test_cover_rejects_empty_sizes(height, band_height):
    with pytest.raises(ValueError):
        cover(height, band_height)


# -- plan_bands -------------------------------------------------------------------

row_buffers = st.dictionaries(
    st.sampled_from(["accumulator", "input bands", "output band"]), st.integers(0, 50_000), min_size=1
)
fixed_buffers = st.dictionaries(st.sampled_from(["decode scratch", "encoder", "result"]), st.integers(0, 10**6))


def _row_bytes(per_row):
    return sum(per_row.values())


def _check_plan(plan, *, height, budget, per_row, fixed, align):
    """Every property a plan must have, checked from first principles."""
    bands = list(plan.bands)
    # the bands cover every row exactly once, in order
    rows = [r for band in bands for r in range(band.start, band.stop)]
    assert rows == list(range(height))
    # every band but the last has the planned height, a multiple of align
    assert all(b.height == plan.band_height for b in bands[:-1])
    assert 0 < bands[-1].height <= plan.band_height
    if len(bands) > 1:
        assert plan.band_height % align == 0
    else:
        assert plan.band_height == height or plan.band_height % align == 0
    # the buffers of the tallest band fit the budget, and the plan says so truthfully
    need = sum(fixed.values()) + _row_bytes(per_row) * plan.band_height
    assert need <= budget
    assert plan.memory == need
    assert sum(plan.breakdown.values()) == need


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    height=st.integers(1, 20_000),
    budget=st.integers(1, 10**8),
    per_row=row_buffers,
    fixed=fixed_buffers,
    align=st.integers(1, 512),
    prefer=st.integers(1, 512),
)
@example(height=10, budget=100, per_row={"accumulator": 10}, fixed={}, align=3, prefer=1)  # exactly 10 rows fit
@example(height=10, budget=99, per_row={"accumulator": 10}, fixed={}, align=3, prefer=1)
@example(height=1, budget=1, per_row={"accumulator": 1}, fixed={}, align=512, prefer=512)
@example(height=1, budget=1, per_row={"accumulator": 0}, fixed={"decode scratch": 2}, align=1, prefer=1)
def test_plan_covers_once_fits_budget_and_aligns(height, budget, per_row, fixed, align, prefer):
    # a plan exists iff the smallest allowed band fits: align rows, or the whole image if shorter
    smallest = min(align, height)
    feasible = sum(fixed.values()) + _row_bytes(per_row) * smallest <= budget
    if not feasible:
        with pytest.raises(BudgetError) as info:
            plan_bands(height, budget=budget, per_row=per_row, fixed=fixed, align=align, prefer_align=prefer)
        assert info.value.exit_code == 2
        return
    plan = plan_bands(height, budget=budget, per_row=per_row, fixed=fixed, align=align, prefer_align=prefer)
    _check_plan(plan, height=height, budget=budget, per_row=per_row, fixed=fixed, align=align)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    height=st.integers(1, 20_000),
    budget=st.integers(1, 10**8),
    per_row=row_buffers,
    fixed=fixed_buffers,
    align=st.integers(1, 64),
)
def test_plan_chooses_the_tallest_band_that_fits(height, budget, per_row, fixed, align):
    """No taller aligned band (or the whole image) would also fit."""
    room = budget - sum(fixed.values())
    assume(room >= _row_bytes(per_row) * min(align, height))
    plan = plan_bands(height, budget=budget, per_row=per_row, fixed=fixed, align=align)
    row = _row_bytes(per_row)
    if plan.band_height < height:
        taller = min(height, plan.band_height + align)
        assert row * taller > room


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    height=st.integers(1, 20_000),
    per_row=row_buffers,
    align=st.integers(1, 64),
    factor=st.integers(1, 8),
    budget=st.integers(1, 10**8),
)
def test_plan_prefers_input_segment_multiples_when_they_fit(height, per_row, align, factor, budget):
    prefer = align * factor
    row = _row_bytes(per_row)
    assume(row * min(prefer, height) <= budget)
    plan = plan_bands(height, budget=budget, per_row=per_row, align=align, prefer_align=prefer)
    _check_plan(plan, height=height, budget=budget, per_row=per_row, fixed={}, align=align)
    assert plan.band_height == height or plan.band_height % prefer == 0


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    height=st.integers(1, 20_000),
    per_row=row_buffers,
    align=st.integers(1, 64),
    max_rows=st.integers(1, 5000),
)
def test_plan_respects_max_rows_when_an_aligned_band_is_that_short(height, per_row, align, max_rows):
    assume(max_rows >= align)
    plan = plan_bands(height, budget=10**12, per_row=per_row, align=align, max_rows=max_rows)
    _check_plan(plan, height=height, budget=10**12, per_row=per_row, fixed={}, align=align)
    assert plan.band_height <= max_rows


def test_fixed_buffers_over_budget_are_a_budget_error_even_without_per_row_costs():
    """Regression: with no per-row cost the planner returned a plan whose fixed buffers exceeded the budget."""
    with pytest.raises(BudgetError):
        plan_bands(100, budget=1000, per_row={"accumulator": 0}, fixed={"encoder": 5000})


def test_plan_ignores_zero_cost_rows():
    plan = plan_bands(1000, budget=10, per_row={"accumulator": 0}, fixed={"x": 10})
    assert [(b.start, b.height) for b in plan.bands] == [(0, 1000)]


def test_budget_error_says_what_is_needed_and_how_to_fix():
    with pytest.raises(BudgetError) as info:
        plan_bands(100, budget=1000, per_row={"accumulator": 600}, fixed={"encoder": 500}, align=1)
    message = str(info.value)
    assert "budget" in message and "max-memory" in message


# -- parse_size ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("512MiB", 512 * 2**20),
        ("2GB", 2 * 10**9),
        ("2gb", 2 * 10**9),
        ("1e9", 10**9),
        ("64 KiB", 64 * 1024),
        (" 1.5GiB ", 3 * 2**29),
        ("1000", 1000),
        ("16MiB", 16 * 2**20),
        ("3k", 3000),
        ("1TiB", 2**40),
        (4096, 4096),
    ],
)
def test_parse_size_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12 parsecs", "0", "-5MiB", "-1", "0.4", "nan", 0, -10, "inf", "1e400"])
def test_parse_size_rejects_with_usage_error(text):
    with pytest.raises(UsageError) as info:
        parse_size(text)
    assert info.value.exit_code == 2


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    height=st.integers(1, 20_000),
    per_row=row_buffers,
    align=st.sampled_from([1, 8, 16]),
    factor=st.sampled_from([2, 4, 16, 32]),
    where=st.floats(0.0, 1.0),
)
def test_bands_shorter_than_segments_divide_them_when_that_costs_at_most_half(height, per_row, align, factor, where):
    """Each segment then lies in whole bands: decoded prefer / band times, never once more."""
    prefer = align * factor
    row = _row_bytes(per_row)
    low, high = row * min(align, height), row * min(prefer, height)  # budgets in [low, high)
    assume(low < high)
    budget = min(high - 1, low + int(where * (high - low)))
    plan = plan_bands(height, budget=budget, per_row=per_row, align=align, prefer_align=prefer)
    _check_plan(plan, height=height, budget=budget, per_row=per_row, fixed={}, align=align)
    tallest = min(height, budget // row) // align * align
    if plan.band_height < height:
        assert prefer % plan.band_height == 0 or 2 * plan.band_height > tallest
        assert 2 * plan.band_height >= tallest
