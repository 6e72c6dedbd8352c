"""Where a search lives and what it was made with: study names, storage, run folder, settings.

A study is named ``<dataset>_<space>_<budget slug>`` unless ``--study`` says otherwise, its
storage defaults to ``sqlite:///runs/<study>/study.db`` and its run folder is always
``runs/<study>/``. The fully resolved configuration is written to ``runs/<study>/config.json``
*and* stored as the study user attribute ``nas_kd_config``, so ``finalize``, ``export`` and
``report`` work from the study alone (also against a remote storage without the run folder).

`SETTINGS_KEYS` are the options every worker of one study must share (they change what a trial
value means); `check_settings` refuses a mismatch with a one-line `UserError`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from nas_kd.errors import UserError

__all__ = [
    "RUNS_DIR",
    "CONFIG_ATTR",
    "SETTINGS_KEYS",
    "default_study_name",
    "default_storage",
    "run_dir",
    "settings_of",
    "check_settings",
    "load_study",
    "study_config",
    "write_json",
    "finished_trials",
    "is_feasible",
    "INTERRUPTED",
    "space_from_config",
]

RUNS_DIR = Path("runs")
INTERRUPTED = "interrupted (Ctrl-C)"  # the fail_reason of a trial stopped by KeyboardInterrupt
CONFIG_ATTR = "nas_kd_config"
# Options that change what a trial's value means: a worker with other values must not join.
SETTINGS_KEYS = ("dataset", "space_sha256", "budget", "mode", "preset", "teacher_sha256", "objectives")


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


def settings_of(config: dict) -> dict[str, Any]:
    """The subset of a resolved configuration that `check_settings` compares."""
    return {key: config.get(key) for key in SETTINGS_KEYS}


def check_settings(stored: dict, wanted: dict, study_name: str) -> None:
    """Refuse to add trials to a study made with other settings (the first differing key is named)."""
    for key in SETTINGS_KEYS:
        if key in stored and stored.get(key) != wanted.get(key):
            raise UserError(
                f"study '{study_name}' was created with {key}={stored.get(key)!r} but this run has "
                f"{key}={wanted.get(key)!r}: use the same options, or start a new study with --study NAME"
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


def study_config(study) -> dict:
    """The resolved configuration the search stored in the study."""
    config = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(config, dict):
        raise UserError(f"study '{study.study_name}' was not made by 'nas-kd search' (no {CONFIG_ATTR} attribute)")
    return config


def space_from_config(config: dict):
    """The search space exactly as searched: parsed from the YAML text stored in the config."""
    import yaml

    from nas_kd.space import SearchSpace

    return SearchSpace.from_dict(yaml.safe_load(config["space_yaml"]), source=config["space_path"])


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
        if t.state == TrialState.FAIL:
            return t.user_attrs.get("fail_reason") not in (None, INTERRUPTED)
        return t.state == TrialState.PRUNED or (t.state == TrialState.COMPLETE and is_feasible(t))

    return [t for t in trials if counts(t)]
