"""bench.prune_signal: the pruning rules replayed on a record of unpruned brief runs."""

from __future__ import annotations

import random

from bench.prune_signal import RULES, Rule, equal_compute, replay

MEDIAN = Rule("median", 50.0, startup=2)
NONE = next(r for r in RULES if r.percentile is None)


def test_the_median_rule_stops_on_epoch_one_in_trial_order():
    # epoch-1 values 0.5, 0.3 start it; then 0.2 < median(0.5, 0.3) = 0.4 stops, 0.6 does not,
    # 0.35 < median(0.5, 0.3, 0.2, 0.6) = 0.4 stops. Finals make the stopped ones the best two.
    histories = [[0.5, 0.70], [0.3, 0.71], [0.2, 0.90], [0.6, 0.72], [0.35, 0.80]]
    r = replay(histories, MEDIAN, top_k=2)
    assert r["stopped"] == 2
    assert r["compute_share"] == (3 * 2 + 2 * 1) / (5 * 2)
    assert r["top_k_stopped"] == 2
    assert abs(r["regret"] - (0.90 - 0.72)) < 1e-12
    assert replay(histories, NONE, top_k=2) | {"rule": ""} == {"rule": "", "stopped": 0, "compute_share": 1.0, "top_k_stopped": 0, "regret": 0.0}


def _record(correlated: bool, n: int = 60) -> list[list[float]]:
    rng = random.Random(1)
    finals = [rng.uniform(0.7, 0.8) for _ in range(n)]
    # Epoch 1 ranks like the final (correlated) or the reverse way (anti-correlated).
    return [[(f if correlated else 1.5 - f) - 0.5, f] for f in finals]


def test_at_equal_compute_pruning_helps_only_when_epoch_one_ranks_like_the_end():
    good, bad = _record(True), _record(False)
    assert equal_compute(good, MEDIAN, 10, draws=300) > equal_compute(good, NONE, 10, draws=300)
    assert equal_compute(bad, MEDIAN, 10, draws=300) < equal_compute(bad, NONE, 10, draws=300)


def test_equal_compute_without_pruning_is_the_best_of_that_many_runs():
    record = _record(True)
    assert equal_compute(record, NONE, len(record), draws=5) == max(h[-1] for h in record)
