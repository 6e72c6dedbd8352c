"""`finalize`: retrain a study's winner (and the uniform baseline) from scratch and test it.

The winner is the feasible COMPLETE trial with the highest validation accuracy, ties going to
fewer MACs: with objectives (accuracy, MACs) that trial is on the Pareto front, so one rule
serves both kinds of study. It is trained with the preset's *full* schedule for ``retrain_seeds``
seeds (seed, seed+1, ...) in the study's mode and evaluated on the **test** split, which the
search never read. Unless baselines are off, the space's largest uniform member within the same
budget is trained the same way with mode ``ce`` and with mode ``kd``.

Everything comes from the study's stored configuration, so this runs later, elsewhere, from
the study alone. Results go to ``runs/<study>/final/``: ``final.json`` and ``winner.pt`` (the
state dict of the seed with the best *validation* accuracy). A second call with the same winner
and settings reuses ``final.json`` instead of training again.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from nas_kd.errors import UserError
from nas_kd.study import is_feasible, load_study, run_dir, space_from_config, study_config, write_json

__all__ = ["pick_winner", "finalize", "load_configured_teacher", "summarise", "FINAL_DIR", "BASELINE_MODES"]

FINAL_DIR = "final"
BASELINE_MODES = ("ce", "kd")


def pick_winner(study):
    """The feasible COMPLETE trial with the best validation accuracy (ties: fewer MACs), or None."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t) and t.user_attrs.get("feasible", True)]
    if not done:
        return None
    return max(done, key=lambda t: (t.values[0], -t.user_attrs.get("macs", 0), -t.number))


def load_configured_teacher(config: dict, device: torch.device, log: Callable[[str], None] = print):
    """The teacher the study was searched with: its recorded file if its SHA-256 still matches,
    else the registry teacher again (cache or retrain) - refused if the fingerprint differs."""
    from nas_kd.config import Schedule
    from nas_kd.data import dataset_info
    from nas_kd.files import digest
    from nas_kd.models.teachers import load_teacher, resolve_teacher

    want = config["teacher"]["sha256"]
    path = Path(config["teacher"]["path"])
    if path.is_file() and digest(path) == want:
        model, _ = load_teacher(path, dataset_info(config["dataset"], config["data_dir"]), device)
        return model
    model, _, path = resolve_teacher(config["teacher"]["spec"], config["dataset"], Schedule(**config["schedules"]["teacher"]), preset=config["preset"], seed=config.get("split_seed", 0), device=device, data_dir=config["data_dir"], reconstruction=config["teacher"]["reconstruction"], log=log)
    if digest(path) != want:
        raise UserError(f"the teacher at {path} is not the one study '{config['study']}' was searched with (SHA-256 differs): restore {config['teacher']['path']}")
    return model


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation (0 for one seed) of test and validation accuracy."""
    test = [r["test_accuracy"] for r in runs]
    val = [r["val_accuracy"] for r in runs]
    return {
        "test_mean": statistics.fmean(test),
        "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
        "val_mean": statistics.fmean(val),
        "runs": runs,
    }


def _train_seeds(cfg, teacher, splits, schedule, mode: str, seeds: list[int], device, log, show_progress, label: str):
    """Train ``cfg`` once per seed; return (per-seed records, state dict of the best-val seed)."""
    from nas_kd.distill import train
    from nas_kd.models.student import build_student

    runs, best = [], None
    for seed in seeds:
        torch.manual_seed(seed)  # the seed decides the initial weights too, not the order of earlier runs
        student = build_student(cfg, splits.info.channels, splits.info.num_classes)
        m = train(student, teacher, splits, schedule, mode, device=device, seed=seed, evaluate_test=True, show_progress=show_progress)
        runs.append({"seed": seed, "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"], "images_per_second": m["images_per_second"]})
        log(f"finalize: {label} mode {mode} seed {seed}: test {m['test_accuracy']:.4f} val {m['val_accuracy']:.4f} ({m['train_seconds']:.1f}s)")
        if best is None or m["val_accuracy"] > best[0]:
            best = (m["val_accuracy"], {k: v.detach().cpu() for k, v in student.state_dict().items()})
    return runs, best[1]


def finalize(
    study_name: str,
    storage: str | None = None,
    *,
    retrain_seeds: int | None = None,
    baselines: bool | None = None,
    device: torch.device | str | None = None,
    teacher=None,
    log: Callable[[str], None] = print,
    show_progress: bool | None = None,
) -> dict:
    """Retrain and test the winner (and baselines); write and return ``final.json``'s content.

    ``retrain_seeds``/``baselines``/``device`` default to what the search was run with;
    ``teacher`` reuses an already loaded teacher (the search passes its own).
    """
    from nas_kd.config import Schedule, parse_budget
    from nas_kd.cost import measure
    from nas_kd.data import load_splits
    from nas_kd.device import resolve_device
    from nas_kd.distill import get_mode
    from nas_kd.models.student import StudentConfig

    study = load_study(study_name, storage)
    config = study_config(study)
    winner = pick_winner(study)
    if winner is None:
        raise UserError(f"study '{study_name}' has no finished candidate within budget yet: run more trials (nas-kd search --study {study_name})")
    k = retrain_seeds if retrain_seeds is not None else config["retrain_seeds"]
    if k < 1:
        raise UserError(f"--retrain-seeds must be at least 1, got {k}")
    with_baselines = config["baselines"] if baselines is None else baselines
    schedule = Schedule(**config["schedules"]["full"])
    seeds = [config["seed"] + i for i in range(k)]
    key = {"winner_trial": winner.number, "config": winner.user_attrs["config"], "seeds": seeds, "with_baselines": with_baselines, "schedule": schedule.to_dict(), "mode": config["mode"], "teacher_sha256": config["teacher_sha256"]}
    out = run_dir(study_name) / FINAL_DIR
    cached = _cached(out, key)
    if cached is not None:
        log(f"finalize: reusing {out / 'final.json'} (same winner, seeds and schedule)")
        return cached

    device = resolve_device(device if device is not None else config["device"])
    if teacher is None:
        teacher = load_configured_teacher(config, device, log)
    shape, n_classes = tuple(config["input_shape"]), config["num_classes"]
    cfg = StudentConfig.from_json(winner.user_attrs["config"])
    splits = load_splits(config["dataset"], config["data_dir"], seed=config.get("split_seed", 0), train_subset=schedule.train_subset)
    mode = get_mode(config["mode"])
    log(f"finalize: winner trial {winner.number} ({cfg.describe()}), {k} seed(s) x {schedule.epochs} epochs on {len(splits.train)} examples")
    runs, state = _train_seeds(cfg, teacher if mode.uses_teacher else None, splits, schedule, mode.name, seeds, device, log, show_progress, "winner")
    cost = measure(cfg, shape, n_classes)
    final = {
        **key,
        "winner": {"trial": winner.number, "config": cfg.to_dict(), "describe": cfg.describe(), "search_val_accuracy": winner.values[0], "macs": cost.macs, "params": cost.params, "mode": mode.name, **summarise(runs)},
        "normalisation": {"mean": list(splits.mean), "std": list(splits.std)},
        "train_examples": len(splits.train),
        "baselines": None,
    }
    if with_baselines:
        space = space_from_config(config)
        base = space.baseline(parse_budget(config["budget"]["text"]), shape, n_classes)
        bcost = measure(base, shape, n_classes)
        final["baselines"] = {"config": base.to_dict(), "describe": base.describe(), "macs": bcost.macs, "params": bcost.params, "modes": {}}
        for name in BASELINE_MODES:
            b_runs, _ = _train_seeds(base, teacher if get_mode(name).uses_teacher else None, splits, schedule, name, seeds, device, log, show_progress, "baseline")
            final["baselines"]["modes"][name] = summarise(b_runs)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "winner.pt")
    write_json(out / "final.json", final)
    return final


def _cached(out: Path, key: dict) -> dict | None:
    import json

    path = out / "final.json"
    if not path.is_file() or not (out / "winner.pt").is_file():
        return None
    try:
        final = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return final if all(final.get(k) == v for k, v in key.items()) else None
