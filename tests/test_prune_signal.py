"""bench.prune_signal: the pruning rules replayed on a record of unpruned brief runs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.prune_signal import RULES, Rule, equal_compute, presets_rule, replay, stopped_at

MEDIAN = Rule("median", 50.0, startup=2)
NONE = next(r for r in RULES if r.percentile is None)


def test_the_median_rule_stops_on_epoch_one_in_trial_order():
    # epoch-1 values 0.5, 0.3 start it; then 0.2 < median(0.5, 0.3) = 0.4 stops, 0.6 does not,
    # 0.35 < median(0.5, 0.3, 0.6) = 0.5 stops (the stopped 0.2 is no finished candidate's).
    # Finals make the stopped ones the best two.
    histories = [[0.5, 0.70], [0.3, 0.71], [0.2, 0.90], [0.6, 0.72], [0.35, 0.80]]
    r = replay(histories, MEDIAN, top_k=2)
    assert r["stopped"] == 2
    assert r["compute_share"] == (3 * 2 + 2 * 1) / (5 * 2)
    assert r["top_k_stopped"] == 2
    assert abs(r["regret"] - (0.90 - 0.72)) < 1e-12
    assert replay(histories, NONE, top_k=2) | {"rule": ""} == {"rule": "", "stopped": 0, "stopped_by_epoch": {"1": 0}, "compute_share": 1.0, "top_k_stopped": 0, "regret": 0.0}


def test_a_stopped_candidates_value_never_enters_the_reference():
    # 0.1 is stopped, so the next candidate meets median(0.5, 0.3) = 0.4, not median(0.5, 0.3, 0.1) = 0.3.
    assert replay([[0.5, 0.7], [0.3, 0.7], [0.1, 0.7], [0.35, 0.7]], MEDIAN)["stopped"] == 2


def test_later_epochs_compare_the_best_so_far_with_the_finished_ones_at_that_epoch():
    finished = [[0.5, 0.6, 0.7], [0.3, 0.8, 0.9]]  # epoch-2 median 0.7
    assert stopped_at(MEDIAN, finished, [0.45, 0.65, 0.9]) == 2  # through epoch 1 (>= 0.4), best 0.65 < 0.7 after epoch 2
    assert stopped_at(MEDIAN, finished, [0.75, 0.6, 0.9]) == 0  # its best so far (0.75) counts, not its epoch-2 value
    assert stopped_at(MEDIAN, finished, [0.2, 0.9, 0.9]) == 1
    r = replay([*finished, [0.45, 0.65, 0.9]], MEDIAN)
    assert r["stopped_by_epoch"] == {"1": 0, "2": 1} and r["compute_share"] == (3 + 3 + 2) / 9


def _optuna_stops(pruner, histories: list[list[float]]) -> list[int]:
    """The epoch after which `pruner` stops each candidate (0: finished) on a real Optuna study,
    reported as `nas_kd.search.Objective` does (epochs from 1, never pruned at the last)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    stops = []
    for h in histories:
        trial = study.ask()
        trial.set_user_attr("feasible", True)
        stop = 0
        for epoch, acc in enumerate(h, start=1):
            trial.report(acc, epoch)
            if epoch < len(h) and trial.should_prune():
                stop = epoch
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if stop else study.tell(trial, h[-1])
        stops.append(stop)
    return stops


def _replayed_stops(rule: Rule, histories: list[list[float]]) -> list[int]:
    finished, stops = [], []
    for h in histories:
        stops.append(stopped_at(rule, finished, h))
        if not stops[-1]:
            finished.append(h)
    return stops


def _histories(epochs: int = 3, n: int = 40) -> list[list[float]]:
    rng = random.Random(3)
    return [[rng.uniform(0.3, 0.9) for _ in range(epochs)] for _ in range(n)]


@pytest.mark.parametrize("rule_name, warmup", [("median", 1), ("median from epoch 2", 2)])
def test_the_replay_stops_what_the_searchs_pruner_stops(rule_name, warmup):
    """Fidelity with `nas_kd.search.TrainedMedianPruner` on a real Optuna study: the same
    candidates stopped after the same epochs, for 3-epoch histories in trial order."""
    from nas_kd.search import TrainedMedianPruner

    histories = _histories()
    by_optuna = _optuna_stops(TrainedMedianPruner(n_startup_trials=5, n_warmup_steps=warmup), histories)
    assert _replayed_stops(next(r for r in RULES if r.name == rule_name), histories) == by_optuna
    assert 2 in by_optuna and (1 in by_optuna) == (warmup == 1)


@pytest.mark.parametrize("preset", ["quick", "standard"])
def test_the_row_marked_as_the_presets_is_what_its_search_prunes_with(in_tmp, preset):
    """The rendered tables mark one rule as the preset's today: it must stop exactly what the
    pruner a search on that preset builds (`nas_kd.search._pruner`) stops, on its brief epochs."""
    from nas_kd.config import PRESETS
    from nas_kd.plan import build_plan
    from nas_kd.search import SearchOptions, _pruner

    marked = [r for r in RULES if presets_rule(r, preset)]
    assert len(marked) == 1
    plan = build_plan(SearchOptions(space=str(Path(__file__).resolve().parents[1] / "search_spaces" / "mbv2.yaml"), dataset="synthetic", preset=preset, baselines=False))
    histories = _histories(PRESETS[preset].brief.epochs)
    assert _optuna_stops(_pruner(plan, lambda _: None), histories) == _replayed_stops(marked[0], histories)


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
