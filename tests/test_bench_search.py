"""bench/search_gpu.py's paired tables: searched vs baseline, and sampler vs sampler, by seed."""

from __future__ import annotations

import pytest

from bench.search_gpu import fill, paired_rows, paired_table


def _runs(accs: dict[int, float]) -> list[dict]:
    return [{"seed": s, "test_accuracy": a} for s, a in accs.items()]


def _report(accs: dict[int, float], macs: int, baselines: dict | None) -> dict:
    winner = {"describe": f"w{macs}", "macs": macs, "params": 1000, "search_val_accuracy": 0.8, "mode": "kd", "retrain_runs": _runs(accs)}
    trials = [{"state": "COMPLETE", "config": f"w{macs}", "macs": macs}]
    return {"winner": winner, "baselines": baselines, "trial_counts": {"trained": 24}, "trials_by_state": {"COMPLETE": 24}, "bench_seconds": 60.0, "budget": {"macs": 2_000_000}, "trials": trials}


BASE = {"describe": "uniform", "macs": 1_900_000, "params": 5000, "modes": {"kd": {"runs": _runs({1: 0.88, 2: 0.89, 3: 0.90})}, "ce": {"runs": _runs({1: 0.87, 2: 0.88, 3: 0.88})}}}


def test_winners_pair_with_their_budgets_baseline_and_each_other_by_seed():
    tpe = _report({3: 0.91, 1: 0.89, 2: 0.90}, 1_950_000, BASE)  # seeds out of order: pairing is by seed, not position
    rnd = _report({1: 0.885, 2: 0.895, 3: 0.905}, 1_800_000, None)  # random search shares TPE's baselines
    paired = paired_rows([("2M", "tpe", tpe), ("2M", "random", rnd)])
    by_sampler = {s["sampler"]: s for s in paired["searches"]}
    assert by_sampler["tpe"]["winner_minus_baseline"]["kd"]["differences"] == pytest.approx([0.01, 0.01, 0.01])
    assert by_sampler["tpe"]["winner_minus_baseline"]["ce"]["mean"] == pytest.approx((0.02 + 0.02 + 0.03) / 3)
    assert by_sampler["random"]["winner_minus_baseline"]["kd"]["differences"] == pytest.approx([0.005, 0.005, 0.005])
    assert by_sampler["random"]["baseline"]["macs"] == 1_900_000
    [versus] = paired["samplers"]
    assert (versus["a"], versus["b"]) == ("tpe", "random")
    assert versus["a_minus_b"]["differences"] == pytest.approx([0.005, 0.005, 0.005])
    text = paired_table(paired)
    assert "| 2M | tpe - random | 1.95M vs 1.80M | +0.50" in text


def test_a_search_without_a_retrained_winner_is_left_out():
    empty = {"winner": None, "baselines": None, "trial_counts": {"trained": 0}, "trials_by_state": {}, "bench_seconds": 1.0, "budget": {"macs": 500_000}, "trials": []}
    tpe = _report({1: 0.9, 2: 0.9, 3: 0.9}, 400_000, {**BASE, "macs": 480_000})
    paired = paired_rows([("0.5M", "tpe", tpe), ("0.5M", "random", empty)])
    assert [s["sampler"] for s in paired["searches"]] == ["tpe"]
    assert paired["samplers"] == []


def test_fill_is_the_binding_limit_over_trained_trials_and_counts_distinct_configs():
    def trial(state, config, macs, memory):
        return {"state": state, "config": config, "macs": macs, "params": 10, "memory_bytes": memory, "size_bytes": None}

    report = {
        "budget": {"macs": 1000, "params": None, "memory": 100, "size": None, "latency": None},
        "trials": [
            trial("COMPLETE", "a", 900, 50),  # MACs bind: 0.9
            trial("PRUNED", "b", 500, 95),  # memory binds: 0.95
            trial("COMPLETE", "a", 900, 50),  # the same config again: not distinct
            trial("PRUNED", "c", 1100, 10),  # over budget: 1.1
            trial("INFEASIBLE", "d", 5000, 500),  # never trained: not counted
            trial("FAIL", "e", 100, 1),
        ],
    }
    f = fill(report)
    assert f["trained"] == 4 and f["distinct"] == 3 and f["over_budget"] == 1
    assert f["median_fill"] == pytest.approx((0.9 + 0.95) / 2) and f["min_fill"] == pytest.approx(0.9)


def test_a_winner_that_is_the_baseline_is_named_so():
    same = _report({1: 0.88, 2: 0.89, 3: 0.90}, 1_900_000, BASE)
    same["winner"]["describe"] = BASE["describe"]
    text = paired_table(paired_rows([("2M", "tpe", same)]))
    assert "1.90M (the baseline itself)" in text and "+0.00 [+0.00, +0.00]" in text
