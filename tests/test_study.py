"""nas_kd.study's trial bookkeeping: what counts towards --trials, and how a study's trials are
told apart (trained, pruned, rejected, failed, abandoned, running)."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from nas_kd.study import INTERRUPTED, finished_trials, is_feasible, trial_counts


def trial(state: TrialState, *, over: float = -0.1, reason: str | None = None):
    """A trial in ``state`` whose budget constraint is ``over`` (> 0: over budget)."""
    attrs = {"fail_reason": reason} if reason else {}
    value = 0.8 if state == TrialState.COMPLETE else None
    return optuna.trial.create_trial(state=state, value=value, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs, system_attrs={"constraints": [over]})


def test_a_student_exactly_at_the_budget_is_within_it():
    assert is_feasible(trial(TrialState.COMPLETE, over=0.0)) and is_feasible(trial(TrialState.COMPLETE, over=-0.5))
    assert not is_feasible(trial(TrialState.COMPLETE, over=1e-9))


def test_what_counts_towards_the_requested_trials():
    """Trained, pruned and failed-with-a-reason candidates count; a rejected (over-budget, never
    trained) one does not, nor one stopped by Ctrl-C or left by a dead worker (retried), nor one
    still running."""
    counted = [trial(TrialState.COMPLETE), trial(TrialState.PRUNED), trial(TrialState.FAIL, reason="NonFiniteLossError: loss became nan")]
    not_counted = [trial(TrialState.COMPLETE, over=0.2), trial(TrialState.FAIL, reason=INTERRUPTED), trial(TrialState.FAIL), trial(TrialState.RUNNING), trial(TrialState.WAITING)]
    assert finished_trials(not_counted + counted) == counted
    c = trial_counts(not_counted + counted)
    assert (c.trained, c.pruned, c.rejected, c.failed, c.abandoned, c.running, c.finished) == (1, 1, 1, 1, 2, 2, 3)
    assert c.describe() == "1 trained, 1 pruned, 1 rejected over budget (untrained), 1 failed, 2 abandoned, 2 running"
