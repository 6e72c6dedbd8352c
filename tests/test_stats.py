"""The t quantile against published table values, and paired differences against hand arithmetic."""

import math
import statistics

import pytest

from nas_kd.stats import PairedDifference, paired_difference, percentile, t_cdf, t_quantile


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)
    assert t_cdf(expected, df) == pytest.approx(0.975, abs=1e-5)


def test_t_tends_to_the_normal():
    assert t_quantile(0.975, 100_000) == pytest.approx(1.95996, abs=1e-3)


def test_paired_difference_by_hand():
    # differences 0.01, 0.015, 0.005: mean 0.01, sd 0.005, se 0.005/sqrt(3), t(0.975, 2) = 4.302653
    d = paired_difference({1: 0.85, 2: 0.86, 3: 0.84, 9: 0.5}, {1: 0.84, 2: 0.845, 3: 0.835})
    half = 4.302653 * 0.005 / math.sqrt(3)
    assert d.seeds == (1, 2, 3) and d.n == 3  # seed 9 has no partner and is left out
    assert d.mean == pytest.approx(0.01) and d.low == pytest.approx(0.01 - half, abs=1e-7) and d.high == pytest.approx(0.01 + half, abs=1e-7)
    assert d.direction == "no detectable difference"
    assert paired_difference({1: 0.9, 2: 0.91, 3: 0.92}, {1: 0.8, 2: 0.82, 3: 0.83}).direction == "better"
    assert paired_difference({1: 0.8, 2: 0.82, 3: 0.83}, {1: 0.9, 2: 0.91, 3: 0.92}).direction == "worse"


def test_one_pair_has_no_interval():
    d = paired_difference({4: 0.9}, {4: 0.8})
    assert d.low is None and d.high is None and d.direction == "no detectable difference" and d.mean == pytest.approx(0.1)
    with pytest.raises(ValueError):
        paired_difference({1: 0.9}, {2: 0.8})


def test_ranks_share_the_mean_rank_on_ties():
    from nas_kd.stats import ranks

    assert ranks([3.0, 1.0, 3.0, 2.0]) == [2.5, 0.0, 2.5, 1.0]


def test_spearman_is_one_for_any_increasing_map_and_minus_one_reversed():
    from nas_kd.stats import spearman

    a = [0.3, 0.1, 0.7, 0.2, 0.9]
    assert abs(spearman(a, [x**3 + 5 for x in a]) - 1.0) < 1e-12
    assert abs(spearman(a, [-x for x in a]) + 1.0) < 1e-12
    # One swapped pair of five: 1 - 6 * 2 / (5 * 24) = 0.9
    assert abs(spearman([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) - 0.9) < 1e-12


def test_percentile_interpolates_like_numpy():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.25) == 1.75
    assert percentile([5.0], 0.1) == 5.0


@pytest.mark.parametrize("t", [-30.0, -2.5, -0.3, 0.0, 0.01, 0.7, 1.5, 4.0, 60.0])
def test_t_cdf_matches_the_closed_forms_of_one_and_two_degrees_of_freedom(t):
    """df 1 is Cauchy's, df 2 has a closed form too: both to 1e-12, on both sides of the incomplete
    beta function's switch to its symmetric continued fraction (and where it converges slowly)."""
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_t_cdf_is_symmetric_for_many_degrees_of_freedom():
    for df in (3, 7, 25, 400):
        for t in (0.2, 1.0, 2.5, 8.0):
            assert t_cdf(t, df) + t_cdf(-t, df) == pytest.approx(1.0, abs=1e-12)
            if t_cdf(t, df) < 0.9999:  # further out the tail's rounding decides the quantile
                assert t_quantile(t_cdf(t, df), df) == pytest.approx(t, abs=1e-8)


@pytest.mark.parametrize("p, df", [(0.0, 3), (1.0, 3), (0.975, 0), (-0.1, 2)])
def test_t_quantile_refuses_what_has_no_quantile(p, df):
    with pytest.raises(ValueError):
        t_quantile(p, df)


def test_paired_difference_orders_by_seed_and_averages():
    # Seeds whose set order is not sorted; differences whose mean (0.02) is not their median (0.01).
    d = paired_difference({10: 0.71, 3: 0.70, 17: 0.74}, {17: 0.70, 3: 0.69, 10: 0.70})
    assert d.seeds == (3, 10, 17) and d.differences == pytest.approx((0.01, 0.01, 0.04)) and d.mean == pytest.approx(0.02)


def test_two_pairs_have_an_interval_on_one_degree_of_freedom():
    d = paired_difference({1: 0.9, 2: 0.8}, {1: 0.8, 2: 0.75})  # differences 0.1, 0.05
    half = 12.706205 * statistics.stdev([0.1, 0.05]) / math.sqrt(2)
    assert d.low == pytest.approx(0.075 - half, abs=1e-6) and d.high == pytest.approx(0.075 + half, abs=1e-6)


def test_an_interval_that_touches_zero_detects_nothing():
    def with_interval(low, high):
        return PairedDifference((1, 2), (0.1, 0.2), 0.15, low, high)

    assert with_interval(0.0, 0.3).direction == with_interval(-0.3, 0.0).direction == with_interval(0.1, None).direction == "no detectable difference"
    assert with_interval(1e-9, 0.3).direction == "better" and with_interval(-0.3, -1e-9).direction == "worse"


def test_a_paired_difference_survives_its_dict():
    d = paired_difference({1: 0.9, 2: 0.8, 3: 0.85}, {1: 0.8, 2: 0.75, 3: 0.8}, confidence=0.9)
    assert PairedDifference.from_dict(d.to_dict()) == d and d.to_dict()["direction"] == d.direction


def test_percentile_matches_numpy_on_uneven_unsorted_values():
    import numpy as np

    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 20):
        values = list(rng.exponential(size=n))
        for q in (0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 0.95, 1.0):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, 100 * q)), abs=1e-12)
