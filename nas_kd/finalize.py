"""`finalize`: retrain a study's winner and the uniform baseline from scratch, fairly, and test them.

The winner is the feasible COMPLETE trial with the highest validation accuracy, ties going to
fewer MACs: with objectives (accuracy, MACs) that trial is on the Pareto front, so one rule
serves both kinds of study. It is trained with the preset's *full* schedule on the plan's retrain
seeds (`nas_kd.plan.Seeds.retrain`, disjoint from the seed the search selected it with) in the
study's mode, and evaluated on the **test** split, which the search never read. Unless baselines
are off, the space's largest uniform member within the same budget is trained on the *same* seeds
and schedule in the *same* mode, and also with plain ``ce``; `nas_kd.verdict` pairs them by seed.

Everything comes from the study's `SearchPlan`, so this runs later, elsewhere, from the study
alone. Results go to ``runs/<study>/final/``: ``final.json`` and ``winner.pt`` (the state dict of
the seed with the best *validation* accuracy). A second call with the same winner and settings
reuses ``final.json`` instead of training again.

Resuming. Each finished retrain run is kept as it ends (``final/runs/``, keyed by student, mode,
seed, schedule and teacher; the winner's runs with their weights), as the re-screen keeps its
scores in the study: a finalize that was interrupted, or asked for more seeds, trains only the
runs it lacks. ``start_by`` (a `time.time()` instant) makes that a plan: no run starts after it,
the runs already going finish and are kept, and `Unfinished` says what is left. The GPU bench
uses it to spread one search's re-screen and retrain over device calls of a few minutes each.

The runs (winner and baselines, every seed) are independent `Retrain` jobs; with ``plan.jobs`` > 1
(``--jobs``) they train that many at once in worker processes (`nas_kd.jobs.map_processes`), each
loading the data and the study's exact teacher file once, so a GPU that one tiny student leaves
mostly idle trains several. A run's result does not depend on where it ran: it is seeded alone.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nas_kd.errors import UserError
from nas_kd.models.student import StudentConfig
from nas_kd.plan import SearchPlan, plan_of
from nas_kd.study import load_study, write_json

__all__ = ["Unfinished", "RUNS_DIR", "pick_winner", "over_latency_limit", "confirm_winner", "confirm_baseline", "measured_latencies", "LATENCY_CHECKS_ATTR", "BASELINE_CHECKS_ATTR", "finalize", "load_planned_teacher", "summarise", "baseline_modes", "FINAL_DIR"]

FINAL_DIR = "final"
RUNS_DIR = "runs"  # in FINAL_DIR: each finished retrain run, kept as it ends


class Unfinished(Exception):
    """A finalize given ``start_by`` that reached it with runs not started. What finished is kept
    (re-screen scores in the study, retrain runs in ``final/runs/``); the next finalize goes on."""

    def __init__(self, rescreen_left: int, retrain_left: int | None):
        self.rescreen_left, self.retrain_left = rescreen_left, retrain_left
        what = f"{rescreen_left} re-screen run(s)" if rescreen_left else f"{retrain_left} retrain run(s)"
        super().__init__(f"{what} not started before the time given (start_by); what finished is kept, finalize again to go on")


def _now() -> float:
    """The clock ``start_by`` is read on (wall time: the same in worker processes)."""
    import time

    return time.time()


def _past(start_by: float | None) -> bool:
    return start_by is not None and _now() > start_by


def baseline_modes(mode_name: str) -> tuple[str, ...]:
    """The study's own mode (a fair comparison), and plain ``ce`` (what a user gets by hand)."""
    return (mode_name,) if mode_name == "ce" else (mode_name, "ce")


LATENCY_CHECKS_ATTR = "nas_kd_latency_checks"  # study attr: {trial number: measurement} taken for the winner
BASELINE_CHECKS_ATTR = "nas_kd_baseline_latency_checks"  # study attr: {config JSON: measurement} taken for the baseline


def measured_latencies(study) -> dict[int, float]:
    """Real latency measurements of a study's trials, those taken in the trial (near the limit)
    and those taken when the trial was about to win (`confirm_winner`), in ms at the slowest speed
    the study has seen (`nas_kd.meter`: the limit is judged there). Measurements from before
    rulers count as they were taken."""
    from nas_kd.meter import judged_ms, slowest_ruler_ms

    trials = study.get_trials(deepcopy=False)
    checks = {int(k): v for k, v in (study.user_attrs.get(LATENCY_CHECKS_ATTR) or {}).items()}
    timed = [v for v in checks.values() if isinstance(v, dict)]
    slowest = slowest_ruler_ms(trials, *(v.get("ruler_ms") for v in timed), *(v.get("slowest_ruler_ms") for v in timed))
    measured = {t.number: judged_ms(t.user_attrs["latency_ms"], t.user_attrs.get("latency_rulers"), slowest) for t in trials if "latency_ms" in t.user_attrs}
    measured.update({n: judged_ms(v["ms"], v.get("rulers"), slowest) if isinstance(v, dict) else float(v) for n, v in checks.items()})
    return measured


def _latency_limit(study) -> float | None:
    from nas_kd.plan import PLAN_ATTR

    return plan_of(study).budget.latency if PLAN_ATTR in study.user_attrs else None


def pick_winner(study):
    """The feasible COMPLETE trial with the best validation accuracy (ties: fewer MACs), or None:
    the re-screen's full-schedule score among the plan's top candidates once they all have one
    (`nas_kd.rescreen`), else the brief run's. A trial whose latency was measured over the
    budget's limit is not feasible, whatever its prediction said."""
    from nas_kd.rescreen import RescreenKey, choose

    plan = plan_of(study)
    return choose(study, plan.rescreen, RescreenKey.of(plan), exclude=over_latency_limit(study))[0]


def over_latency_limit(study) -> frozenset[int]:
    """Trials whose latency was measured over the budget's limit."""
    limit = _latency_limit(study)
    return frozenset(n for n, ms in measured_latencies(study).items() if ms > limit) if limit is not None else frozenset()


def _latency_check(meter, cfg: StudentConfig):
    """(the `Latency` measured for the limit, the record a study keeps of it): what a resumed
    finalize judges again at the slowest speed seen by then."""
    latency, _ = meter.measure_for_limit(cfg)
    return latency, {"ms": latency.median_ms, "ruler_ms": latency.ruler_ms, "rulers": latency.rulers, "slowest_ruler_ms": meter.slowest_ms()}


def confirm_winner(study, log: Callable[[str], None] = print, rescreen_missing: Callable[[frozenset[int]], object] | None = None):
    """`pick_winner`, with its latency measured for real when the budget limits latency; a
    winner measured over the limit is recorded (study attr `LATENCY_CHECKS_ATTR`) and the next
    best is tried, so the winner always meets every limit when measured. ``rescreen_missing``
    (given the trials now excluded) re-screens the top candidates that lack a score first, so a
    candidate moving up into the top N is re-screened too."""
    from nas_kd.meter import BudgetMeter

    plan = plan_of(study) if _latency_limit(study) is not None else None
    while True:
        if rescreen_missing is not None:
            rescreen_missing(over_latency_limit(study))
        winner = pick_winner(study)
        if winner is None or plan is None or winner.number in measured_latencies(study):
            return winner
        meter = BudgetMeter(plan.budget, plan.input_shape, plan.num_classes, plan.space)
        meter.correct_from(study.get_trials(deepcopy=False))
        latency, check = _latency_check(meter, StudentConfig.from_json(winner.user_attrs["config"]))
        checks = dict(study.user_attrs.get(LATENCY_CHECKS_ATTR) or {})
        checks[str(winner.number)] = check
        study.set_user_attr(LATENCY_CHECKS_ATTR, checks)
        ms = measured_latencies(study)[winner.number]
        fits = ms <= plan.budget.latency
        log(
            f"finalize: trial {winner.number} measures {latency.median_ms:.3f} ms now, {ms:.3f} ms at the slowest speed seen (ruler {latency.ruler_ms:.3f} ms now, "
            f"{meter.slowest_ms():.3f} ms slowest; predicted {winner.user_attrs.get('predicted_latency_ms', float('nan')):.3f}, limit {plan.budget.latency:g}): {'fits' if fits else 'over the limit, next best'}"
        )
        if fits:
            return winner


def confirm_baseline(study, plan: SearchPlan, log: Callable[[str], None] = print, passed_over: list[dict] | None = None) -> StudentConfig | None:
    """The uniform baseline the winner is compared with, held to the winner's latency rule
    (`confirm_winner`): the largest uniform member that fits by prediction at the study's
    correction and slowest speed, is no trial measured over the limit, and measures within it now
    at the slowest speed seen; one measured over is recorded (study attr `BASELINE_CHECKS_ATTR`)
    and the next smaller member is tried; one a trial measured within it (the winner's check too) is
    not measured again, and the largest uniform member so measured is the baseline if no larger one
    fits by prediction (a measurement outranks a prediction). Otherwise a baseline over the limit
    could be the yardstick (a fresh-clone `latency:0.2ms` search compared its winner with a baseline the study had just
    measured at 0.29 ms). Each member passed over is appended to ``passed_over`` ({"describe",
    "latency_ms" as judged, "trial": the trial that measured it, or None for a check here}). None
    when no uniform member meets the limit. Without a latency limit, `SearchSpace.baseline` alone."""
    from nas_kd.meter import BudgetMeter, judged_ms

    trials = study.get_trials(deepcopy=False)
    if plan.budget.latency is None:
        return plan.space.baseline(plan.budget, plan.input_shape, plan.num_classes, trials=trials)
    measured = measured_latencies(study)
    timed = {t.number: t.user_attrs["config"] for t in trials if t.number in measured and "config" in t.user_attrs}
    over = {config: (n, measured[n]) for n, config in timed.items() if measured[n] > plan.budget.latency}
    # Measured within the limit in a trial or as the winner (the winner may be this very member):
    # confirmed by that measurement, as the winner was. Measuring it again could judge the same
    # student on both sides of the limit (a fresh-clone latency:0.2ms search set its winner, the
    # uniform member, against a smaller baseline after a second measurement read 0.209 ms).
    within = {config: (n, measured[n]) for n, config in timed.items() if measured[n] <= plan.budget.latency and config not in over}
    checks = dict(study.user_attrs.get(BASELINE_CHECKS_ATTR) or {})
    meter = BudgetMeter(plan.budget, plan.input_shape, plan.num_classes, plan.space)
    meter.correct_from(trials)
    # A uniform member measured within the limit fits, whatever the corrected prediction now says
    # (a fresh-clone latency:0.2ms search won with the enqueued uniform member, measured within,
    # while the study's correction had moved its prediction over, and compared it with a smaller
    # uniform "baseline": the winner was the larger hand-scaled answer itself).
    size = functools.partial(_size_of, plan)
    members = {c.to_json() for c in plan.space.uniform_members()}
    measured_fit = sorted((k for k in within if k in members and plan.budget.fits(**{**meter.values(StudentConfig.from_json(k)), "latency": within[k][1]})), key=size)
    rejected: set[str] = set()
    while True:
        try:
            base = plan.space.baseline(plan.budget, plan.input_shape, plan.num_classes, trials=trials, exclude=rejected)
        except UserError:
            base = None
        # The prediction's choice measured within, or a larger member measured within: no new measurement.
        if measured_fit and (base is None or size(measured_fit[-1]) >= size(base.to_json())):
            number, ms = within[measured_fit[-1]]
            chosen = StudentConfig.from_json(measured_fit[-1])
            larger = "; larger than the prediction's choice" if base is None or chosen != base else ""
            log(f"finalize: uniform baseline {chosen.describe()} was measured within the latency limit in trial {number} ({ms:.3f} ms at the slowest speed seen, limit {plan.budget.latency:g}{larger}): fits")
            return _with_larger_over(chosen, over, members, size, passed_over)
        if base is None:
            log(f"finalize: no uniform member of {plan.space.name} meets the latency limit ({plan.budget.latency:g} ms) when measured: no baseline to compare with")
            return None
        key = base.to_json()
        if key in over:  # the search measured it over the limit: set aside, as it was as a candidate
            number, ms = over[key]
            log(f"finalize: uniform baseline {base.describe()} was measured over the latency limit in trial {number} ({ms:.3f} ms at the slowest speed seen): next smaller")
        else:
            if key not in checks:  # a resumed finalize reuses its checks: the same baseline again
                checks[key] = _latency_check(meter, base)[1]
                study.set_user_attr(BASELINE_CHECKS_ATTR, checks)
            check, number = checks[key], None
            ms = judged_ms(check["ms"], check["rulers"], max(meter.slowest_ms(), check["slowest_ruler_ms"]))
            fits = ms <= plan.budget.latency
            log(f"finalize: uniform baseline {base.describe()} measures {check['ms']:.3f} ms, {ms:.3f} ms at the slowest speed seen (limit {plan.budget.latency:g}): {'fits' if fits else 'over the limit, next smaller'}")
            if fits:
                return _with_larger_over(base, over, members, size, passed_over)
        if passed_over is not None:
            passed_over.append({"describe": base.describe(), "latency_ms": ms, "trial": number})
        rejected.add(key)


def _with_larger_over(chosen: StudentConfig, over: dict, members: set[str], size, passed_over: list[dict] | None) -> StudentConfig:
    """``chosen``, after naming in ``passed_over`` (largest first) every larger uniform member a
    trial measured over the limit that the choice never reached: the corrected prediction may no
    longer propose the member the search enqueued as its baseline, yet the report's list of larger
    members passed over should hold it."""
    if passed_over is not None:
        listed = {m["describe"] for m in passed_over}
        extra = [k for k in over if k in members and size(k) > size(chosen.to_json()) and StudentConfig.from_json(k).describe() not in listed]
        passed_over[:0] = [{"describe": StudentConfig.from_json(k).describe(), "latency_ms": over[k][1], "trial": over[k][0]} for k in sorted(extra, key=size, reverse=True)]
    return chosen


def _size_of(plan: SearchPlan, config_json: str) -> tuple[int, int]:
    """(MACs, params): how `SearchSpace.baseline` orders uniform members ("the largest")."""
    from nas_kd.cost import measure

    cost = measure(StudentConfig.from_json(config_json), plan.input_shape, plan.num_classes)
    return cost.macs, cost.params


def load_planned_teacher(plan: SearchPlan, device: torch.device, log: Callable[[str], None] = print):
    """The teacher the study was searched with: its recorded file if its SHA-256 still matches,
    else the registry teacher again (cache or retrain) - refused if the fingerprint differs."""
    from nas_kd.data import dataset_info
    from nas_kd.files import digest
    from nas_kd.models.teachers import load_verified, resolve_teacher

    ref = plan.teacher
    loaded = load_verified(ref.path, ref.sha256, dataset_info(plan.dataset, plan.data_dir), device)
    if loaded is not None:
        return loaded[0]
    model, _, path = resolve_teacher(ref.spec, plan.dataset, plan.preset.teacher, preset=plan.preset.name, seed=plan.seeds.split, device=device, data_dir=plan.data_dir, reconstruction=ref.reconstruction, log=log)
    if digest(path) != ref.sha256:
        raise UserError(f"the teacher at {path} is not the one study '{plan.study}' was searched with (SHA-256 differs): restore {ref.path}")
    return model


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation (None for one seed: there is no spread to show) of test
    accuracy, mean validation accuracy, and the per-seed records."""
    test = [r["test_accuracy"] for r in runs]
    val = [r["val_accuracy"] for r in runs]
    return {
        "test_mean": statistics.fmean(test),
        "test_std": statistics.stdev(test) if len(test) > 1 else None,
        "val_mean": statistics.fmean(val),
        "runs": runs,
    }


def _teacher_pass(teacher, splits, schedule, mode, device, reuse=None) -> dict:
    """The teacher's outputs for the full schedule's training data, computed once and shared by
    every seed of the winner and of the baseline in the same mode (`nas_kd.distill.cache`);
    ``reuse``, a cache filled before (the search's), serves instead if it is this teacher's on
    the same examples and views and holds what the mode reads."""
    from nas_kd.distill.trainer import MAX_CACHE_BYTES, prepare_teacher
    from nas_kd.train import make_loaders

    if teacher is None or not mode.uses_teacher:
        return {}
    train_dl = make_loaders(splits, batch_size=schedule.batch_size, device=device, seed=0, crop=schedule.crop)[0]
    if reuse is not None and train_dl.views is not None and reuse.matches(teacher, train_dl) and reuse.covers(mode):
        return {"teacher_cache": reuse, "teacher_attention": reuse.attention_state}
    cache, attention = prepare_teacher(teacher, train_dl, mode, splits.info.num_classes, teacher_cache=None, teacher_attention=None, max_cache_bytes=MAX_CACHE_BYTES, input_shape=splits.info.input_shape, log=None)
    return {"teacher_cache": cache, "teacher_attention": attention}


@dataclass(frozen=True)
class Retrain:
    """One final run: a student (config JSON) in a mode on a seed, trained from scratch."""

    label: str  # "winner" or "baseline"
    config: str
    mode: str  # a mode name; the study's own mode carries the plan's loss-weight overrides
    seed: int


def distinct_runs(runs: list[Retrain]) -> dict[tuple[str, str, int], Retrain]:
    """One run per (config, mode, seed), first label kept: the same student, mode and seed trains
    to the same result, so when the winner *is* the uniform baseline (the re-screen can pick it,
    `nas_kd.rescreen`) its runs serve both."""
    out: dict[tuple[str, str, int], Retrain] = {}
    for job in runs:
        out.setdefault((job.config, job.mode, job.seed), job)
    return out


def _run_key(job: Retrain, plan: SearchPlan) -> str:
    """What a kept run was trained as (JSON): another student, mode, seed, schedule or teacher is another run."""
    import json

    mode = _mode(plan, job.mode)
    key = {"config": job.config, "mode": mode.describe(), "seed": job.seed, "schedule": plan.full.to_dict(), "teacher_sha256": plan.teacher.sha256 if mode.uses_teacher else None}
    return json.dumps(key, sort_keys=True)


def _kept_path(out: Path, job: Retrain, key: str) -> Path:
    import hashlib

    return out / RUNS_DIR / f"{job.mode}-s{job.seed}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _keep(out: Path, job: Retrain, plan: SearchPlan, result: dict) -> None:
    """Keep a finished run (the winner's with its weights: the baselines' are never read back),
    written atomically."""
    from nas_kd.files import atomic_write

    key = _run_key(job, plan)
    kept = {"key": key, "record": result["record"], "state": result["state"] if job.label == "winner" else None}
    atomic_write(_kept_path(out, job, key), lambda f: torch.save(kept, f))


def _kept(out: Path, job: Retrain, plan: SearchPlan) -> dict | None:
    """A kept run's result (`_run`'s form), or None: none kept, another run's, or a baseline's
    run (kept without weights) that a winner now needs."""
    key = _run_key(job, plan)
    path = _kept_path(out, job, key)
    if not path.is_file():
        return None
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: train it again
        return None
    if kept.get("key") != key or (job.label == "winner" and kept.get("state") is None):
        return None
    return {"record": kept["record"], "state": kept["state"]}


def _mode(plan: SearchPlan, name: str):
    from nas_kd.distill.modes import get_mode

    return plan.mode if name == plan.mode_name else get_mode(name)


def _train(config: str, mode, seed: int, plan: SearchPlan, teacher, splits, device, *, evaluate_test: bool, shared: dict | None = None, **train_kw):
    """One student from scratch with the full schedule: (metrics, the trained student);
    ``train_kw`` (show_progress, log) go to `nas_kd.distill.train`."""
    from nas_kd.distill import train
    from nas_kd.models.student import build_student

    torch.manual_seed(seed)  # the seed decides the initial weights too, not the order of earlier runs
    student = build_student(StudentConfig.from_json(config), splits.info.channels, splits.info.num_classes)
    m = train(student, teacher if mode.uses_teacher else None, splits, plan.full, mode, device=device, seed=seed, evaluate_test=evaluate_test, **train_kw, **(shared or {}))
    return m, student


def _run(job: Retrain, plan: SearchPlan, teacher, splits, device, show_progress, shared: dict | None = None) -> dict:
    """Train and test one `Retrain`; its record and the student's state dict (on the CPU)."""
    m, student = _train(job.config, _mode(plan, job.mode), job.seed, plan, teacher, splits, device, evaluate_test=True, show_progress=show_progress, shared=shared)
    record = {"seed": job.seed, "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"], "images_per_second": m["images_per_second"]}
    return {"record": record, "state": {k: v.detach().cpu() for k, v in student.state_dict().items()}}


def _screen(config: str, plan: SearchPlan, teacher, splits, device, shared: dict) -> tuple[float, float]:
    """One re-screen run: the full schedule on the search seed, scored on validation only (the
    test split stays unread until the retrain). (validation accuracy, seconds)."""
    m, _ = _train(config, plan.mode, plan.seeds.search, plan, teacher, splits, device, evaluate_test=False, shared=shared, show_progress=False, log=None)
    return m["val_accuracy"], m["train_seconds"]


_worker: dict = {}  # a worker process's data and teacher, loaded by its first run


def _run_in_worker(plan_dict: dict, device_name: str, teacher_cache: str | None, start_by: float | None, job: Retrain) -> dict | None:
    """`_run` in a `map_processes` worker: the plan's splits, the study's teacher file and the
    teacher's outputs from ``teacher_cache`` (the parent's, `nas_kd.distill.shared_cache`), or
    filled here once for all of this worker's runs if that file does not fit (`_worker_setup`).
    None, untrained, once ``start_by`` has passed."""
    if _past(start_by):
        return None
    plan = _worker_setup(plan_dict, device_name, teacher_cache)
    in_mode = job.mode == plan.mode.name
    result = _run(job, plan, _worker["teacher"], _worker["splits"], _worker["device"], show_progress=False, shared=_worker["shared"] if in_mode else None)
    # Where this run's teacher outputs came from, for the parent's summary line.
    cached = in_mode and _worker["shared"].get("teacher_cache") is not None
    return result | {"teacher_outputs": _worker["origin"] if cached else None}


def _screen_in_worker(plan_dict: dict, device_name: str, teacher_cache: str | None, start_by: float | None, config: str) -> tuple[float, float] | None:
    """`_screen` (one re-screen run: validation accuracy, seconds) in a `map_processes` worker,
    set up as `_run_in_worker`'s; None, untrained, once ``start_by`` has passed."""
    if _past(start_by):
        return None
    plan = _worker_setup(plan_dict, device_name, teacher_cache)
    return _screen(config, plan, _worker["teacher"], _worker["splits"], _worker["device"], _worker["shared"])


def _worker_setup(plan_dict: dict, device_name: str, teacher_cache: str | None) -> SearchPlan:
    """A worker process's data, teacher and the teacher's outputs (from the parent's file
    ``teacher_cache``, or filled here once for all of this worker's runs if that does not fit),
    loaded by its first run of a study and kept in `_worker`; returns the plan."""
    from nas_kd.data import dataset_info, load_splits
    from nas_kd.device import configure_step, resolve_device
    from nas_kd.distill.shared_cache import open_cache_for
    from nas_kd.models.teachers import load_verified

    plan = SearchPlan.from_dict(plan_dict)
    if _worker.get("study") != plan.study:
        configure_step(plan.step)
        device = resolve_device(device_name)
        loaded = load_verified(plan.teacher.path, plan.teacher.sha256, dataset_info(plan.dataset, plan.data_dir), device)
        if loaded is None:
            raise UserError(f"the teacher file {plan.teacher.path} is gone or changed (SHA-256 {plan.teacher.sha256[:12]}): restore it and finalize again")
        splits = load_splits(plan.dataset, plan.data_dir, seed=plan.seeds.split, train_subset=plan.full.train_subset)
        opened = open_cache_for(Path(teacher_cache), loaded[0], splits, plan.full, device, plan.mode)[0] if teacher_cache is not None else None
        shared = _teacher_pass(loaded[0], splits, plan.full, plan.mode, device, reuse=opened)
        _worker.update(study=plan.study, device=device, teacher=loaded[0], splits=splits, shared=shared, origin="opened" if opened is not None else "filled")
    return plan


def _bound_teacher_intact(plan: SearchPlan) -> bool:
    from nas_kd.files import digest

    path = Path(plan.teacher.path or "")
    return path.is_file() and digest(path) == plan.teacher.sha256


def finalize(study_name: str, storage: str | None = None, **options) -> dict:
    """Retrain and test the winner (and the baseline); write and return ``final.json``'s content.
    Options: `_finalize`'s. The teacher's outputs that worker processes open (the re-screen's and
    the retrain's, `_finalize`) are in a file that lasts as long as this call."""
    with contextlib.ExitStack() as files:
        return _finalize(study_name, storage, files=files, **options)


def _finalize(
    study_name: str,
    storage: str | None = None,
    *,
    files: contextlib.ExitStack,
    retrain_seeds: int | None = None,
    baselines: bool | None = None,
    device: torch.device | str | None = None,
    teacher=None,
    teacher_cache=None,
    jobs: int | None = None,
    start_by: float | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool | None = None,
) -> dict:
    """`finalize`, with ``files`` holding the shared teacher-output file while it runs.

    ``retrain_seeds`` (a count), ``baselines``, ``device`` and ``jobs`` (runs at once) default to
    the plan's; ``teacher`` reuses an already loaded teacher (the search passes its own), and
    ``teacher_cache`` that teacher's filled outputs (the search's brief trials'), used where the
    full schedule trains on the same examples and views (a crop-free full schedule on the brief
    one's data), so the retrain does not run the teacher over them again. ``start_by``: see the
    module docstring (raises `Unfinished`).
    """
    from nas_kd.cost import measure
    from nas_kd.data import load_splits
    from nas_kd.device import configure_step, resolve_device
    from nas_kd.distill.shared_cache import CACHE_FILE, shared_file
    from nas_kd.jobs import map_processes
    from nas_kd.meter import BudgetMeter
    from nas_kd.rescreen import RescreenKey, choose, contenders, rescreen, scores
    from nas_kd.verdict import compare_runs

    study = load_study(study_name, storage)
    plan = plan_of(study)
    configure_step(plan.step)  # the retrain computes as the search's trials did
    device = resolve_device(device if device is not None else plan.device)
    schedule, mode = plan.full, plan.mode
    shared: dict = {}

    def data():
        if "splits" not in shared:
            shared["splits"] = load_splits(plan.dataset, plan.data_dir, seed=plan.seeds.split, train_subset=schedule.train_subset)
        return shared["splits"]

    def resources() -> tuple:
        """Data, teacher and its one cached pass for the full schedule: loaded at first need,
        shared by the re-screen and the sequential retrain."""
        if "cache" not in shared:
            model = teacher if teacher is not None or not mode.uses_teacher else load_planned_teacher(plan, device, log)
            shared.update(teacher=model, cache=_teacher_pass(model, data(), schedule, mode, device, reuse=teacher_cache))
        return data(), shared["teacher"], shared["cache"]

    def rescreen_one(config: str) -> tuple[float, float] | None:
        if _past(start_by):
            return None
        splits, model, cache = resources()
        return _screen(config, plan, model, splits, device, cache)

    out = plan.run_dir / FINAL_DIR
    at_once = plan.jobs if jobs is None else jobs  # runs in worker processes at once (--jobs)
    parallel_ok = at_once > 1 and _bound_teacher_intact(plan)

    def shared_file_path() -> str | None:
        """The teacher's outputs filled once, here, and written for worker processes to open
        (not once per run or per worker), for the rest of the call; None: nothing to share."""
        if "file" not in shared:
            cache = resources()[2].get("teacher_cache") if mode.uses_teacher and not schedule.crop else None
            shared["file"] = files.enter_context(shared_file(cache, out / CACHE_FILE))
        return str(shared["file"]) if shared["file"] else None

    def rescreen_all(configs: list[str], done) -> None:
        # The re-screen's runs at once in worker processes, as the retrain's: on a GPU each is a
        # 20-epoch run (~3 minutes in eager steps), which one after another made the re-screen
        # the longest stage of a standard search.
        count = min(at_once, len(configs))
        log(f"finalize: re-screen of {len(configs)} candidates, {count} at once (--jobs)")
        run = functools.partial(_screen_in_worker, plan.to_dict(), str(device), shared_file_path(), start_by)
        index = {config: i for i, config in enumerate(configs)}  # distinct: one contender per config (`nas_kd.rescreen.ranked`)
        map_processes(run, configs, count, on_result=lambda config, result: done(index[config], result))

    def rescreen_missing(exclude: frozenset[int]) -> None:
        def unscored() -> int:
            have = scores(study, RescreenKey.of(plan))
            return sum(t.number not in have for t in contenders(study, plan.rescreen, exclude))

        if start_by is not None and _past(start_by) and unscored():
            raise Unfinished(unscored(), None)  # before the teacher's outputs are filled for nothing
        rescreen(study, plan, rescreen_one, log=log, exclude=exclude, train_all=rescreen_all if parallel_ok else None)
        if start_by is not None and unscored():  # not all started: the winner is not known yet
            raise Unfinished(unscored(), None)

    winner = confirm_winner(study, log, rescreen_missing)
    rescreened = choose(study, plan.rescreen, RescreenKey.of(plan), exclude=over_latency_limit(study))[1] if winner is not None else None
    if winner is None:
        raise UserError(f"study '{study_name}' has no finished candidate within budget yet: run more trials (nas-kd search --study {study_name})")
    if retrain_seeds is not None:
        plan = plan.with_retrain_seeds(retrain_seeds)
    with_baselines = plan.baselines if baselines is None else baselines
    seeds = plan.seeds.retrain
    key = {"winner_trial": winner.number, "config": winner.user_attrs["config"], "seeds": list(seeds), "with_baselines": with_baselines, "schedule": schedule.to_dict(), "mode": mode.describe(), "teacher_sha256": plan.teacher.sha256}
    cached = _cached(out, key)
    if cached is not None:
        log(f"finalize: reusing {out / 'final.json'} (same winner, seeds and schedule)")
        if cached.get("rescreen") != rescreened:  # more candidates re-screened, the same winner
            cached["rescreen"] = rescreened
            write_json(out / "final.json", cached)
        return cached

    cfg = StudentConfig.from_json(winner.user_attrs["config"])
    # Latency budgets: at the study's slowest speed and correction and measured, like the winner.
    passed_over: list[dict] = []
    base = confirm_baseline(study, plan, log, passed_over) if with_baselines else None
    runs = [Retrain("winner", winner.user_attrs["config"], mode.name, s) for s in seeds]
    runs += [Retrain("baseline", base.to_json(), name, s) for name in baseline_modes(mode.name) for s in seeds] if base else []
    chosen = f"best of {len(rescreened)} re-screened" if rescreened else "best brief run"
    log(f"finalize: winner trial {winner.number} ({cfg.describe()}; {chosen}), seeds {', '.join(map(str, seeds))} x {schedule.epochs} epochs, mode {mode.name}")

    def report(job: Retrain, result: dict) -> None:
        r = result["record"]
        log(f"finalize: {job.label} mode {job.mode} seed {job.seed}: test {r['test_accuracy']:.4f} val {r['val_accuracy']:.4f} ({r['train_seconds']:.1f}s)")

    distinct = distinct_runs(runs)
    by_key = {k: r for k, job in distinct.items() if (r := _kept(out, job, plan)) is not None}
    todo_keys = [k for k in distinct if k not in by_key]
    todo = [distinct[k] for k in todo_keys]
    if by_key:
        log(f"finalize: {len(by_key)} of {len(distinct)} runs kept from an earlier finalize ({out / RUNS_DIR}); {len(todo)} to train")
    if todo and _past(start_by):
        raise Unfinished(0, len(todo))  # before the teacher's outputs are filled for nothing

    def finished(job: Retrain, result: dict | None) -> None:
        if result is not None:  # None: not started, start_by had passed
            _keep(out, job, plan, result)
            report(job, result)

    parallel = min(at_once, len(todo))
    # Worker processes load the study's exact teacher file; if it moved, train here, where
    # load_planned_teacher can find it again.
    if parallel > 1 and parallel_ok:
        log(f"finalize: {len(todo)} runs, {parallel} at once (--jobs)")
        run = functools.partial(_run_in_worker, plan.to_dict(), str(device), shared_file_path(), start_by)
        results = map_processes(run, todo, parallel, on_result=finished)
        origins = collections.Counter(r.pop("teacher_outputs") for r in results if r is not None)
        if origins["opened"] or origins["filled"]:
            log(f"finalize: teacher outputs of {origins['opened']} run(s) opened from the parent's cache, {origins['filled']} filled by their worker")
    elif todo:
        splits, model, cache = resources()  # one teacher pass for every run in the study's mode
        if model is None and any(_mode(plan, j.mode).uses_teacher for j in todo):
            model = load_planned_teacher(plan, device, log)  # a baseline mode that needs a teacher the study's mode does not
        results = []
        for job in todo:
            results.append(None if _past(start_by) else _run(job, plan, model, splits, device, show_progress, cache if job.mode == mode.name else None))
            finished(job, results[-1])
    else:
        results = []
    left = sum(r is None for r in results)
    if left:
        raise Unfinished(0, left)
    by_key.update(zip(todo_keys, results, strict=True))
    by_run = {j: by_key[(j.config, j.mode, j.seed)] for j in runs}
    winner_results = [by_run[j] for j in runs if j.label == "winner"]
    state = max(winner_results, key=lambda r: r["record"]["val_accuracy"])["state"]  # first of equals: the lower seed
    meter = BudgetMeter(plan.budget, plan.input_shape, plan.num_classes, plan.space)
    meter.correct_from(study.get_trials(deepcopy=False))  # latency budgets: the slowest speed the search saw
    cost = measure(cfg, plan.input_shape, plan.num_classes)
    final = {
        **key,
        "winner": {"trial": winner.number, "config": cfg.to_dict(), "describe": cfg.describe(), "search_val_accuracy": winner.values[0], "macs": cost.macs, "params": cost.params, "footprint": meter.footprint(cfg), "mode": mode.name, **summarise([r["record"] for r in winner_results])},
        "rescreen": rescreened,
        "normalisation": {"mean": list(data().mean), "std": list(data().std)},
        "train_examples": len(data().train),
        "baselines": None,
        "comparisons": None,
    }
    if base is not None:
        bcost = measure(base, plan.input_shape, plan.num_classes)
        final["baselines"] = {"config": base.to_dict(), "describe": base.describe(), "macs": bcost.macs, "params": bcost.params, "footprint": meter.footprint(base), "modes": {}, "passed_over": passed_over}
        for name in baseline_modes(mode.name):
            final["baselines"]["modes"][name] = summarise([by_run[j]["record"] for j in runs if j.label == "baseline" and j.mode == name])
        final["comparisons"] = {m: d.to_dict() for m, d in compare_runs(final["winner"], final["baselines"]["modes"]).items()}
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
