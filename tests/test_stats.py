"""The t quantile against published table values, and paired differences against hand arithmetic."""

import math

import pytest

from nas_kd.stats import paired_difference, t_cdf, t_quantile


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
    from nas_kd.stats import percentile

    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.25) == 1.75
    assert percentile([5.0], 0.1) == 5.0
