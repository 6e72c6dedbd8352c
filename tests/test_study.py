"""nas_kd.study's trial bookkeeping: what counts towards --trials, and how a study's trials are
told apart (trained, pruned, rejected, failed, abandoned, running)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from nas_kd.errors import UserError
from nas_kd.study import (
    INTERRUPTED,
    check_settings,
    default_study_name,
    finished_trials,
    is_feasible,
    load_study,
    run_dir,
    trial_counts,
    write_json,
)


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


def test_a_zero_count_is_left_out_of_the_description_and_only_a_finished_trial_is_rejected():
    """An over-budget trial is told COMPLETE within a millisecond; caught before that, it is running."""
    c = trial_counts([trial(TrialState.COMPLETE), trial(TrialState.RUNNING, over=0.3)])
    assert (c.rejected, c.running) == (0, 1)
    assert trial_counts([trial(TrialState.COMPLETE)]).describe() == "1 trained, 0 pruned, 0 rejected over budget (untrained), 0 failed"


def test_study_names_are_folder_names():
    assert default_study_name("npz:x", "my space/v2", "macs2M").endswith("_my_space_v2_macs2M")
    assert default_study_name("fashion-mnist", "mbv2", "macs2M") == "fashion-mnist_mbv2_macs2M"
    for bad in ("", ".", "..", "a/b", "a\\b"):
        with pytest.raises(UserError, match="invalid study name"):
            run_dir(bad)


def test_a_worker_missing_a_setting_the_study_has_is_refused():
    """A worker of an older nas-kd that does not know a setting cannot show it matches."""
    check_settings({"mode": "kd"}, {"mode": "kd", "extra": 1}, "s")
    with pytest.raises(UserError, match="study 's' was created with split_seed=0 but this run has split_seed=None"):
        check_settings({"mode": "kd", "split_seed": 0}, {"mode": "kd"}, "s")


def test_a_storage_without_the_study_is_one_line_naming_both(in_tmp):
    url = f"sqlite:///{in_tmp / 'other.db'}"
    optuna.create_study(study_name="other", storage=url)
    with pytest.raises(UserError, match=f"storage {url} holds no study 'mine': check --study and --storage"):
        load_study("mine", url)


def test_json_files_keep_the_order_they_were_written_in(in_tmp):
    path = write_json(in_tmp / "config.json", {"study": "s", "budget": "2M", "accuracy": 0.9})
    assert path.read_text() == '{\n  "study": "s",\n  "budget": "2M",\n  "accuracy": 0.9\n}\n'
