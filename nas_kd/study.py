"""Where a search lives and how its trials stand: study names, storage, run folder, trial counts.

A study is named ``<dataset>_<space>_<budget slug>`` unless ``--study`` says otherwise, its
storage defaults to ``sqlite:///runs/<study>/study.db`` and its run folder is always
``runs/<study>/``. Its settings are a `nas_kd.plan.SearchPlan`, stored with the study.
`check_settings` refuses a worker whose plan would change what a trial value means.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_kd.errors import UserError

__all__ = [
    "RUNS_DIR",
    "default_study_name",
    "default_storage",
    "run_dir",
    "check_settings",
    "load_study",
    "TrialCounts",
    "trial_counts",
    "cut_short",
    "STOP_ATTR",
    "write_json",
    "finished_trials",
    "is_feasible",
    "INTERRUPTED",
]

RUNS_DIR = Path("runs")
INTERRUPTED = "interrupted (Ctrl-C)"  # the fail_reason of a trial stopped by KeyboardInterrupt
STOP_ATTR = "stop_reason"  # why the last session stopped before its requested trial count


def default_study_name(dataset: str, space_name: str, budget_slug: str) -> str:
    """``fashion-mnist_mbv2_macs2M``: readable, and safe as a folder name."""
    from nas_kd.data import dataset_slug

    return f"{dataset_slug(dataset)}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', space_name)}_{budget_slug}"


def run_dir(study_name: str, root: str | os.PathLike = RUNS_DIR) -> Path:
    if not study_name or "/" in study_name or "\\" in study_name or study_name in (".", ".."):
        raise UserError(f"invalid study name '{study_name}': use letters, digits, '-', '_' and '.' only")
    return Path(root) / study_name


def default_storage(study_name: str, root: str | os.PathLike = RUNS_DIR) -> str:
    return f"sqlite:///{run_dir(study_name, root) / 'study.db'}"


def check_settings(stored: dict, wanted: dict, study_name: str, own_command: str | None = None) -> None:
    """Refuse to add trials to a study made with other settings (`SearchPlan.settings`; the first
    differing key is named). ``own_command``: the line that resumes the study as it was made
    (`SearchPlan.command`), named in the refusal: a default changed since (a preset's mode or
    brief schedule) refuses a run given the same options as the study's first."""
    for key, value in stored.items():
        if wanted.get(key) != value:
            same = f"use the same options ({own_command})" if own_command else "use the same options"
            raise UserError(
                f"study '{study_name}' was created with {key}={value!r} but this run has "
                f"{key}={wanted.get(key)!r}: {same}, or start a new study with --study NAME"
            )


def _storage_or_default(study_name: str, storage: str | None) -> str:
    if storage:
        return storage
    path = run_dir(study_name) / "study.db"
    if not path.is_file():
        raise UserError(f"no study '{study_name}' at {path}: run 'nas-kd search' first, or pass --storage URL")
    return default_storage(study_name)


def load_study(study_name: str, storage: str | None = None):
    """An existing study (default storage: its run folder's SQLite file); `UserError` if absent."""
    import optuna

    url = _storage_or_default(study_name, storage)
    from nas_kd.storage import open_storage

    storage = open_storage(url, heartbeat_interval=None)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise UserError(f"storage {url} holds no study '{study_name}': check --study and --storage") from None


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomic write (temp file + rename): an interrupted run never leaves half a JSON file."""
    from nas_kd.files import atomic_write

    def dump(f) -> None:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")

    return atomic_write(path, dump, binary=False)


def is_feasible(trial) -> bool:
    """Within budget: every Optuna constraint value <= 0 (a trial with none counts as feasible)."""
    return all(v <= 0 for v in trial.constraints.values())


def finished_trials(trials) -> list:
    """Trials that count towards ``--trials``: trained candidates that ended, however they ended
    (COMPLETE and within budget, PRUNED, FAIL with a recorded reason such as NaN or out of
    memory). Over-budget candidates are rejected in about a millisecond without training and do
    not count; neither do RUNNING ones, trials stopped by Ctrl-C, nor FAIL trials without a reason:
    those were left by a killed worker and failed by a heartbeat check, and their parameters are
    retried (nas_kd.workers), so counting them would lose a candidate."""
    from optuna.trial import TrialState

    def counts(t) -> bool:
        return _failed_with_reason(t) or t.state == TrialState.PRUNED or (t.state == TrialState.COMPLETE and is_feasible(t))

    return [t for t in trials if counts(t)]


def _failed_with_reason(trial) -> bool:
    """A FAIL that says why (NaN, out of memory...): not a Ctrl-C's, not a dead worker's."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason") not in (None, INTERRUPTED)


@dataclass(frozen=True)
class TrialCounts:
    """Every trial of a study, by what happened to it."""

    trained: int  # COMPLETE within budget: a validation accuracy
    pruned: int  # stopped after an epoch by the pruner
    rejected: int  # over budget, never trained
    failed: int  # NaN loss, out of memory, ... (a recorded reason)
    abandoned: int  # interrupted by Ctrl-C or left by a dead worker (their parameters are retried)
    running: int

    @property
    def finished(self) -> int:
        """What ``--trials`` counts (see `finished_trials`)."""
        return self.trained + self.pruned + self.failed

    def describe(self) -> str:
        parts = [f"{self.trained} trained", f"{self.pruned} pruned", f"{self.rejected} rejected over budget (untrained)", f"{self.failed} failed"]
        parts += [f"{n} {name}" for n, name in ((self.abandoned, "abandoned"), (self.running, "running")) if n]
        return ", ".join(parts)


def trial_counts(trials) -> TrialCounts:
    from optuna.trial import TrialState

    def n(pred) -> int:
        return sum(1 for t in trials if pred(t))

    return TrialCounts(
        trained=n(lambda t: t.state == TrialState.COMPLETE and is_feasible(t)),
        pruned=n(lambda t: t.state == TrialState.PRUNED),
        rejected=n(lambda t: t.state == TrialState.COMPLETE and not is_feasible(t)),
        failed=n(_failed_with_reason),
        abandoned=n(lambda t: t.state == TrialState.FAIL and not _failed_with_reason(t)),
        running=n(lambda t: t.state in (TrialState.RUNNING, TrialState.WAITING)),
    )


def cut_short(study, requested: int | None) -> str | None:
    """Why the study holds fewer finished trials than requested, or None when it has them all
    (or when only ``--timeout`` bounded it)."""
    counts = trial_counts(study.get_trials(deepcopy=False))
    if requested is None or counts.finished >= requested:
        return None
    why = study.user_attrs.get(STOP_ATTR) or "the search was stopped"
    return f"{counts.finished} of {requested} requested candidates finished; {why}"
