"""The re-screen: which candidates it trains again, and how it changes the winner."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution

from nas_kd.config import Schedule
from nas_kd.rescreen import (
    RescreenKey,
    candidates_key,
    choose,
    contenders,
    most_runs,
    ranked,
    record,
    rescreen,
    scores,
)

FULL = Schedule(epochs=3, batch_size=128, lr=0.1)
KEY = RescreenKey(tuple(sorted(FULL.to_dict().items())), 0, "kd")


def _study(trials: list[tuple[str, float, int]], baseline: str | None = None, infeasible: str | None = None):
    """An in-memory study of COMPLETE trials: (config, brief val accuracy, MACs); the trial of
    config ``baseline`` is marked as the uniform baseline, as the search marks it, and that of
    ``infeasible`` as measured over the budget's limit in its run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for config, val, macs in trials:
        attrs = {"config": config, "macs": macs, **({"baseline": True} if config == baseline else {}), **({"feasible": False} if config == infeasible else {})}
        study.add_trial(optuna.trial.create_trial(params={"x": 0.0}, distributions={"x": FloatDistribution(0, 1)}, value=val, user_attrs=attrs))
    return study


def _plan(rescreen_count: int):
    return SimpleNamespace(rescreen=rescreen_count, full=FULL, seeds=SimpleNamespace(search=0), mode=SimpleNamespace(describe=lambda: "kd"))


def test_ranked_orders_by_brief_accuracy_then_fewer_macs_one_trial_per_config():
    study = _study([("a", 0.80, 100), ("b", 0.85, 200), ("c", 0.85, 150), ("b", 0.90, 200), ("d", 0.85, 120)])
    # "b" twice: its best trial stands for it; "c" and "d" tie on accuracy and the smaller one comes first
    assert [t.user_attrs["config"] for t in ranked(study)] == ["b", "d", "c", "a"]


def test_ranked_leaves_out_trials_over_a_limit():
    """A trial measured over the latency limit in its own run (user attr ``feasible`` False, as the
    search records it) or afterwards (``exclude``: `nas_kd.finalize.over_latency_limit`) is never
    a candidate, however well it scored."""
    study = _study([("a", 0.95, 100), ("b", 0.90, 100), ("c", 0.85, 100), ("d", 0.80, 100)], infeasible="a")
    assert [t.user_attrs["config"] for t in ranked(study)] == ["b", "c", "d"]
    assert [t.user_attrs["config"] for t in ranked(study, exclude=frozenset({1}))] == ["c", "d"]
    assert [t.user_attrs["config"] for t in contenders(study, 2, exclude=frozenset({1}))] == ["c", "d"]


def test_the_rescreen_score_picks_the_winner_among_the_top_candidates():
    study = _study([("a", 0.90, 100), ("b", 0.88, 100), ("c", 0.86, 100), ("d", 0.50, 100)])
    for number, val in ((0, 0.70), (1, 0.75), (2, 0.72)):
        record(study, number, KEY, val, 1.0)
    winner, rows = choose(study, 3, KEY)
    assert winner.user_attrs["config"] == "b"  # best on the full schedule, second on the brief one
    assert [r["trial"] for r in rows] == [0, 1, 2] and rows[1]["rescreen_val_accuracy"] == 0.75
    # d is fourth: outside a top 3 even with a high score
    record(study, 3, KEY, 0.99, 1.0)
    assert choose(study, 3, KEY)[0].user_attrs["config"] == "b"


def test_without_every_score_or_with_rescreen_off_the_brief_run_decides():
    study = _study([("a", 0.90, 100), ("b", 0.88, 100), ("c", 0.86, 100)])
    record(study, 1, KEY, 0.99, 1.0)
    assert choose(study, 3, KEY) == (study.trials[0], None)  # trial 0 and 2 lack a score
    for n in (0, 2):
        record(study, n, KEY, 0.5, 1.0)
    assert choose(study, 3, KEY)[0].number == 1
    assert choose(study, 1, KEY) == (study.trials[0], None)
    assert choose(study, 0, KEY) == (study.trials[0], None)


def test_a_score_measured_under_another_schedule_does_not_count():
    study = _study([("a", 0.90, 100), ("b", 0.88, 100)])
    other = RescreenKey(tuple(sorted(Schedule(epochs=9).to_dict().items())), 0, "kd")
    record(study, 0, other, 0.1, 1.0)
    record(study, 1, other, 0.9, 1.0)
    assert scores(study, KEY) == {} and choose(study, 2, KEY)[1] is None
    assert scores(study, other) == {0: 0.1, 1: 0.9}


def test_rescreen_trains_only_the_missing_top_candidates_once():
    study = _study([("a", 0.90, 100), ("b", 0.88, 100), ("c", 0.86, 100), ("d", 0.80, 100)])
    record(study, 1, RescreenKey.of(_plan(3)), 0.6, 1.0)
    trained = []

    def train_val(config):
        trained.append(config)
        return {"a": 0.5, "c": 0.7}[config], 2.0

    assert rescreen(study, _plan(3), train_val, log=lambda _: None) == 2
    assert trained == ["a", "c"]
    assert choose(study, 3, RescreenKey.of(_plan(3)))[0].user_attrs["config"] == "c"
    assert rescreen(study, _plan(3), train_val, log=lambda _: None) == 0 and trained == ["a", "c"]
    assert rescreen(study, _plan(1), train_val, log=lambda _: None) == 0  # off


@pytest.mark.parametrize(("count", "expected"), [(3, "trials 0,1,2"), (1, "trial 0"), (0, "trial 0")])
def test_the_finalisation_key_is_known_before_any_rescreen(count, expected):
    study = _study([("a", 0.90, 100), ("b", 0.88, 100), ("c", 0.86, 100), ("d", 0.80, 100)])
    assert candidates_key(study, count) == expected
    record(study, 2, KEY, 0.99, 1.0)  # a score changes the winner, not what is being finalised
    assert candidates_key(study, count) == expected


def test_the_uniform_baseline_is_rescreened_even_outside_the_top_and_can_win():
    """Deep uniform students learn slowly in a brief run (0.5M: 64% brief, best retrain): the
    baseline's trial is always re-screened, so the search never answers worse than it at that fidelity."""
    study = _study([("u", 0.64, 100), ("a", 0.80, 100), ("b", 0.79, 100), ("c", 0.78, 100), ("d", 0.70, 100)], baseline="u")
    assert [t.user_attrs["config"] for t in contenders(study, 3)] == ["a", "b", "c", "u"] and contenders(study, 1) == []
    assert candidates_key(study, 3) == "trials 1,2,3,0" and candidates_key(study, 1) == "trial 1"
    trained = []

    def train_val(config):
        trained.append(config)
        return {"a": 0.86, "b": 0.87, "c": 0.85, "u": 0.88}[config], 1.0

    assert rescreen(study, _plan(3), train_val, log=lambda _: None) == 4 and trained == ["a", "b", "c", "u"]
    # what bench-gpu plans a finish on: the top 3 and the baseline outside them, none without a re-screen
    assert most_runs(3) == len(trained) and most_runs(1) == 0
    winner, rows = choose(study, 3, RescreenKey.of(_plan(3)))
    assert winner.user_attrs["config"] == "u" and [r["baseline"] for r in rows] == [False, False, False, True]
    # inside the top it is not added twice
    inside = _study([("a", 0.80, 100), ("u", 0.79, 100), ("b", 0.78, 100), ("c", 0.77, 100)], baseline="u")
    assert [t.user_attrs["config"] for t in contenders(inside, 3)] == ["a", "u", "b"]


def test_a_winner_that_is_the_baseline_trains_once_per_mode_and_seed():
    from nas_kd.finalize import Retrain, distinct_runs

    runs = [Retrain("winner", "u", "kd", s) for s in (1, 2)] + [Retrain("baseline", "u", m, s) for m in ("kd", "ce") for s in (1, 2)]
    todo = distinct_runs(runs)
    assert [(j.label, j.mode, j.seed) for j in todo.values()] == [("winner", "kd", 1), ("winner", "kd", 2), ("baseline", "ce", 1), ("baseline", "ce", 2)]
    assert len(distinct_runs([Retrain("winner", "a", "kd", 1), Retrain("baseline", "u", "kd", 1)])) == 2


def test_a_tie_on_the_rescreen_goes_to_the_smaller_student():
    """Equal full-schedule scores: the cheaper student serves the same accuracy, so it wins."""
    study = _study([("a", 0.90, 300), ("b", 0.88, 100), ("c", 0.86, 200)])
    for number in range(3):
        record(study, number, KEY, 0.75, 1.0)
    assert choose(study, 3, KEY)[0].user_attrs["config"] == "b"
