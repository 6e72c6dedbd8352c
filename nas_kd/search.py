"""`run_search`: an Optuna study over a search space, each candidate distilled briefly.

One trial: sample a `StudentConfig`, cost it (the analytic model first, ~1 ms; fvcore only for
candidates within budget), record the budget as Optuna constraints (`Trial.set_constraint`, which
TPE and NSGA-II read), and either reject it untrained (over budget: value 0.0 accuracy, user attr
``feasible=False``) or distil it with the preset's *brief* schedule and return its validation
accuracy. Data and teacher are loaded once per process. How the study is named, resumed and
stopped is in docs/SEARCH.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from optuna.pruners import BasePruner

from nas_kd.errors import UserError
from nas_kd.storage import is_sqlite, normalise_url, open_storage
from nas_kd.study import (
    CONFIG_ATTR,
    INTERRUPTED,
    check_settings,
    default_storage,
    default_study_name,
    finished_trials,
    is_feasible,
    run_dir,
    settings_of,
    space_from_config,
    write_json,
)
from nas_kd.train import NonFiniteLossError

__all__ = [
    "SearchOptions",
    "Objective",
    "SAMPLERS",
    "OBJECTIVES",
    "run_search",
    "resolve_config",
    "make_sampler",
    "parse_objectives",
    "failure_types",
    "trial_line",
]

SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVES = ("accuracy", "accuracy,macs")
# Stop a session once this many over-budget candidates per wanted trial were rejected: a budget
# almost nothing fits would otherwise fill the study with rejections.
REJECTIONS_PER_TRIAL = 50


@dataclass
class SearchOptions:
    """Everything `nas-kd search` accepts; None means "the documented default"."""

    budget: str = "2M"
    space: str = "search_spaces/mbv2.yaml"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    teacher: str = "resnet20"
    teacher_recon: bool = False
    mode: str = "full"
    trials: int | None = None
    timeout: float | None = None
    study: str | None = None
    storage: str | None = None
    sampler: str = "tpe"
    objectives: str = "accuracy"
    preset: str | None = None
    seed: int = 0
    retrain_seeds: int = 3
    baselines: bool = True
    device: str = "auto"
    progress: bool | None = None
    heartbeat: int = 10  # seconds; see nas_kd.storage
    teacher_seed: int = 0  # the cached teacher's seed, and the seed of the validation split it left out


class TrainedMedianPruner(BasePruner):
    """Optuna's MedianPruner, with startup counted in *trained* candidates.

    MedianPruner waits for ``n_startup_trials`` COMPLETE trials, but an over-budget candidate
    is COMPLETE too (untrained, no intermediate values): with many rejections, pruning started
    after a single trained candidate and then pruned nearly every other one."""

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 1):
        import optuna

        self.n_startup_trials = n_startup_trials
        self._median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=n_warmup_steps)

    def prune(self, study, trial) -> bool:
        from optuna.trial import TrialState

        trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("feasible")]
        return len(trained) >= self.n_startup_trials and self._median.prune(study, trial)


def parse_objectives(text: str) -> list[str]:
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if ",".join(names) not in OBJECTIVES:
        raise UserError(f"invalid --objectives '{text}': use {' or '.join(OBJECTIVES)}")
    return names


def make_sampler(name: str, seed: int, multi: bool):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=not multi)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler '{name}': choose one of {', '.join(SAMPLERS)}")


def failure_types() -> tuple[type[Exception], ...]:
    """Exceptions that fail one trial and let the study go on (Optuna's ``catch``)."""
    return (NonFiniteLossError, torch.cuda.OutOfMemoryError)


def _check_options(opts: SearchOptions) -> None:
    if opts.trials is not None and opts.trials < 1:
        raise UserError(f"--trials must be at least 1, got {opts.trials}")
    if opts.timeout is not None and not opts.timeout > 0:
        raise UserError(f"--timeout must be positive seconds, got {opts.timeout}")
    if opts.retrain_seeds < 1:
        raise UserError(f"--retrain-seeds must be at least 1, got {opts.retrain_seeds}")
    if opts.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{opts.sampler}': choose one of {', '.join(SAMPLERS)}")
    if opts.heartbeat < 1:
        raise UserError(f"--heartbeat must be at least 1 second, got {opts.heartbeat}")
    if opts.study is not None:
        run_dir(opts.study)  # UserError for names that are no folder name
    if opts.storage:
        # Before any teacher is trained or folder made: a bad URL or an unreachable server
        # leaves runs/ untouched. A SQLite file is created on first use, so only its URL is checked.
        if is_sqlite(normalise_url(opts.storage)):
            return
        open_storage(opts.storage, heartbeat_interval=None).engine.dispose()


def resolve_config(opts: SearchOptions, teacher_meta: dict, teacher_path: Path) -> dict:
    """Every resolved option, the preset's schedules and the teacher's fingerprint: what
    ``config.json`` holds and what ``finalize`` needs to run later from the study alone."""
    import nas_kd
    from nas_kd.config import get_preset, parse_budget
    from nas_kd.data import dataset_info
    from nas_kd.files import digest
    from nas_kd.space import SearchSpace

    budget = parse_budget(opts.budget)
    space_text = Path(opts.space).read_text()
    space = SearchSpace.load(opts.space)
    info = dataset_info(opts.dataset, opts.data_dir)
    preset = get_preset(opts.preset)
    study = opts.study or default_study_name(info.name, space.name, budget.slug())
    trials = opts.trials if opts.trials is not None or opts.timeout is not None else preset.trials
    teacher_sha256 = digest(teacher_path)  # one read of the checkpoint, used twice below

    return {
        "study": study,
        "storage": opts.storage or default_storage(study),
        "run_dir": str(run_dir(study)),
        "dataset": info.name,
        "data_dir": opts.data_dir,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        "space": space.name,
        "space_path": str(opts.space),
        "space_sha256": hashlib.sha256(space_text.encode()).hexdigest(),
        "space_yaml": space_text,
        "space_size": space.size(),
        "budget": {"text": budget.text, "macs": budget.macs, "params": budget.params, "describe": budget.describe()},
        "mode": opts.mode,
        "teacher": {
            "spec": opts.teacher,
            "path": str(teacher_path),
            "arch": teacher_meta.get("arch"),
            "reconstruction": bool(teacher_meta.get("reconstruction")),
            "test_accuracy": teacher_meta.get("test_accuracy"),
            "val_accuracy": teacher_meta.get("val_accuracy"),
            "sha256": teacher_sha256,
        },
        "teacher_sha256": teacher_sha256,
        "trials": trials,
        "timeout": opts.timeout,
        "sampler": opts.sampler,
        "objectives": parse_objectives(opts.objectives),
        "preset": preset.name,
        "schedules": preset.to_dict(),
        "seed": opts.seed,
        # The validation split is the teacher's: carving it with any other seed would validate
        # candidates on examples the teacher was trained on.
        "split_seed": int(teacher_meta.get("seed", opts.teacher_seed)),
        "heartbeat": opts.heartbeat,
        "retrain_seeds": opts.retrain_seeds,
        "baselines": opts.baselines,
        "device": opts.device,
        "command": _command_for(dataclasses.replace(opts, preset=preset.name, trials=trials), study),
        "versions": {"nas_kd": nas_kd.__version__, "torch": str(torch.__version__), "python": platform.python_version()},
    }


def _command_for(opts: SearchOptions, study: str) -> str:
    """The CLI line that reproduces ``opts``, preset and trial count spelt out (a GPU machine would
    otherwise pick another preset)."""
    parts = ["nas-kd", "search", "--budget", opts.budget, "--space", opts.space, "--dataset", opts.dataset]
    parts += ["--teacher", opts.teacher, "--mode", opts.mode, "--sampler", opts.sampler, "--objectives", opts.objectives]
    parts += ["--study", study, "--seed", str(opts.seed), "--retrain-seeds", str(opts.retrain_seeds)]
    for flag, value in (("--preset", opts.preset), ("--trials", opts.trials), ("--timeout", opts.timeout), ("--storage", opts.storage), ("--data-dir", opts.data_dir)):
        if value is not None:
            parts += [flag, str(value)]
    if not opts.baselines:
        parts.append("--no-baselines")
    return shlex.join(parts)


class Objective:
    """Optuna objective: cost, reject or distil one candidate (see module docstring)."""

    def __init__(self, config: dict, *, teacher, device: torch.device, multi: bool, prune: bool):
        from nas_kd.config import Schedule, parse_budget

        self.config = config
        self.space = space_from_config(config)
        self.budget = parse_budget(config["budget"]["text"])
        self.shape = tuple(config["input_shape"])
        self.num_classes = config["num_classes"]
        self.schedule = Schedule(**config["schedules"]["brief"])
        self.teacher, self.device, self.multi, self.prune = teacher, device, multi, prune
        self._splits = self._loaders = None

    def data(self):
        """The brief schedule's splits and device loaders, loaded on first use and then reused."""
        if self._splits is None:
            from nas_kd.data import load_splits
            from nas_kd.train import make_loaders

            self._splits = load_splits(self.config["dataset"], self.config["data_dir"], seed=self.config.get("split_seed", 0), train_subset=self.schedule.train_subset)
            self._loaders = make_loaders(self._splits, batch_size=self.schedule.batch_size, device=self.device, seed=self.config["seed"], crop=self.schedule.crop)
        return self._splits, self._loaders

    def _values(self, accuracy: float, macs: int):
        return (accuracy, float(macs)) if self.multi else accuracy

    def __call__(self, trial):
        import optuna

        from nas_kd.cost import analytic_cost, measure
        from nas_kd.distill import train
        from nas_kd.models.student import build_student

        cfg = self.space.sample(trial)
        trial.set_user_attr("config", cfg.to_json())
        trial.set_user_attr("describe", cfg.describe())
        analytic = analytic_cost(cfg, self.shape, self.num_classes)
        trial.set_user_attr("analytic_macs", analytic.macs)
        trial.set_user_attr("analytic_params", analytic.params)
        cost = analytic
        if self.budget.fits(analytic.macs, analytic.params):
            cost = measure(cfg, self.shape, self.num_classes)  # fvcore: the reference count
        feasible = self.budget.fits(cost.macs, cost.params)
        violations = self.budget.violations(cost.macs, cost.params)
        for key, value in zip([k for k in ("macs", "params") if getattr(self.budget, k) is not None], violations, strict=True):
            trial.set_constraint(key, value)
        trial.set_user_attr("constraints", violations)
        trial.set_user_attr("macs", cost.macs)
        trial.set_user_attr("params", cost.params)
        trial.set_user_attr("feasible", feasible)
        if not feasible:
            return self._values(0.0, cost.macs)

        splits, loaders = self.data()
        loaders[0].generator.manual_seed(self.config["seed"])  # every candidate sees the same batch order
        torch.manual_seed(self.config["seed"])  # every candidate starts from the same seed
        student = build_student(cfg, self.shape[0], self.num_classes)
        history: list[float] = []

        def on_epoch(epoch: int, accuracy: float) -> None:
            history.append(accuracy)
            trial.set_user_attr("val_history", history)
            if self.multi:
                return  # Optuna's trial.report is single-objective only
            trial.report(accuracy, epoch)
            if self.prune and epoch < self.schedule.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation accuracy {accuracy:.4f}")

        try:
            metrics = train(student, self.teacher, splits, self.schedule, self.config["mode"], device=self.device, seed=self.config["seed"], epoch_callback=on_epoch, show_progress=False, loaders=loaders)
        except failure_types() as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        trial.set_user_attr("train_seconds", metrics["train_seconds"])
        trial.set_user_attr("images_per_second", metrics["images_per_second"])
        return self._values(metrics["val_accuracy"], cost.macs)


def trial_line(t) -> str:
    """One log line: number, short config, MACs, validation accuracy, seconds, state."""
    from nas_kd.config import format_count

    state = t.state.name if is_feasible(t) else "INFEASIBLE"
    macs = t.user_attrs.get("macs")
    acc = t.values[0] if t.values and is_feasible(t) else None
    if acc is None and t.intermediate_values:
        acc = t.intermediate_values[max(t.intermediate_values)]
    seconds = t.duration.total_seconds() if t.duration else 0.0
    text = f"trial {t.number:>3}  {t.user_attrs.get('describe', '?')}  {format_count(macs) if macs is not None else '?'} MACs"
    text += f"  val {acc:.4f}" if acc is not None else "  val   -   "
    text += f"  {seconds:.1f}s  {state}"
    if t.user_attrs.get("fail_reason"):
        text += f" ({t.user_attrs['fail_reason']})"
    return text


def _open_study(config: dict, multi: bool, log: Callable[[str], None]):
    import optuna

    from nas_kd.config import get_preset

    Path(config["run_dir"]).mkdir(parents=True, exist_ok=True)
    name = config["study"]
    storage = open_storage(config["storage"], heartbeat_interval=config.get("heartbeat", 10))
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        check_settings(settings_of(existing.user_attrs.get(CONFIG_ATTR) or {}), settings_of(config), name)
    previous = len(existing.trials) if existing is not None else 0
    # A resumed session must not replay the first session's random draws: offset the seed.
    sampler = make_sampler(config["sampler"], config["seed"] + previous, multi)
    if multi:
        pruner = optuna.pruners.NopPruner()
        log("search: two objectives, so no pruning (Optuna prunes single-objective studies only)")
    else:
        # Candidates train only a few epochs: prune after the first, once 5 trials set the median.
        pruner = TrainedMedianPruner(n_startup_trials=5, n_warmup_steps=1)
        if get_preset(config["preset"]).brief.epochs < 2:
            log("search: the brief schedule has one epoch, so nothing is pruned (a trial is never pruned at its last epoch)")
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, directions=directions, load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 3.2 in practice
        study.set_metric_names(["val_accuracy", "macs"] if multi else ["val_accuracy"])
    study.set_user_attr(CONFIG_ATTR, config)
    return study, previous


def _budget_note(config: dict) -> None:
    from nas_kd.config import parse_budget
    from nas_kd.cost import analytic_cost

    space = space_from_config(config)
    budget = parse_budget(config["budget"]["text"])
    cost = analytic_cost(space.smallest(), tuple(config["input_shape"]), config["num_classes"])
    if not budget.fits(cost.macs, cost.params):
        raise UserError(f"budget {budget.describe()} is below the smallest member of {space.name} ({cost.describe()}): raise the budget")
    if config["baselines"]:
        space.baseline(budget, tuple(config["input_shape"]), config["num_classes"])  # UserError when none fits


def run_search(opts: SearchOptions, *, log: Callable[[str], None] = print, finish: bool = True) -> dict:
    """Create or resume the study, run trials until ``--trials`` trained candidates ended (or
    ``--timeout``), then (``finish``) retrain the winner, write the report and export it.

    Returns {"study", "storage", "run_dir", "new_trials", "finished", "report": paths or None}.
    A Ctrl-C fails the running trial, writes a partial report and re-raises KeyboardInterrupt.
    """
    import optuna

    from nas_kd.config import get_preset, parse_budget
    from nas_kd.data import dataset_info
    from nas_kd.device import resolve_device
    from nas_kd.distill import get_mode
    from nas_kd.models.teachers import resolve_teacher
    from nas_kd.space import SearchSpace
    from nas_kd.workers import FINALIZE_ATTR, claim_finalize, mark_finalized, run_trials

    _check_options(opts)
    budget = parse_budget(opts.budget)
    SearchSpace.load(opts.space)
    dataset_info(opts.dataset, opts.data_dir)
    mode = get_mode(opts.mode)
    multi = len(parse_objectives(opts.objectives)) > 1
    preset = get_preset(opts.preset)
    device = resolve_device(opts.device)
    log(f"search: preset {preset.name} (brief {preset.brief.epochs} epoch(s) on {preset.brief.train_subset or 'all'} examples; device {device.type}), budget {budget.describe()}, mode {mode.name}")
    if opts.sampler == "nsga2" and not multi:
        log("search: NSGA-II on one objective is a genetic algorithm; TPE is usually better there")

    teacher, meta, path = resolve_teacher(opts.teacher, opts.dataset, preset.teacher, preset=preset.name, seed=opts.teacher_seed, device=device, data_dir=opts.data_dir, reconstruction=opts.teacher_recon, log=log)
    config = resolve_config(opts, meta, path)
    _budget_note(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, previous = _open_study(config, multi, log)
    write_json(Path(config["run_dir"]) / "config.json", config)
    log(f"search: study {config['study']} in {config['storage']} ({previous} trials so far)")

    target = config["trials"]
    objective = Objective(config, teacher=teacher if mode.uses_teacher else None, device=device, multi=multi, prune=not multi)
    done = len(finished_trials(study.get_trials(deepcopy=False)))
    new_trials, start = 0, time.perf_counter()
    bar = _bar(target, done, opts.progress)

    def after_trial(st, t) -> None:
        nonlocal new_trials
        new_trials += 1
        finished = finished_trials(st.get_trials(deepcopy=False))
        line = trial_line(t)
        if bar is not None:
            bar.n = min(len(finished), bar.total or len(finished))
            bar.refresh()
            bar.write(line)
        else:
            log(line)

    stop_reason: list[str] = []

    def too_many_rejections() -> bool:
        trials = study.get_trials(deepcopy=False)
        rejected = sum(1 for x in trials if x.state == optuna.trial.TrialState.COMPLETE and not is_feasible(x))
        if rejected > REJECTIONS_PER_TRIAL * (target or 20):
            stop_reason.append(f"search: stopping, {rejected} candidates were over budget; raise the budget or narrow the space")
            return True
        return False

    try:
        if target is not None and done >= target:
            log(f"search: {done} of {target} trials already finished; nothing to run")
        else:
            # Claims under the study lock, heartbeats, retries of dead workers' trials: see nas_kd.workers.
            run_trials(study, objective, url=config["storage"], target=target, timeout=opts.timeout, catch=failure_types(), after_trial=after_trial, should_stop=too_many_rejections)
        for reason in stop_reason[:1]:
            log(reason)
    except KeyboardInterrupt:
        _add_wall(study, time.perf_counter() - start)
        if bar is not None:
            bar.close()
        _partial_report(study, log)
        raise
    if bar is not None:
        bar.close()
    _add_wall(study, time.perf_counter() - start)
    finished = len(finished_trials(study.get_trials(deepcopy=False)))
    result = {"study": config["study"], "storage": config["storage"], "run_dir": config["run_dir"], "new_trials": new_trials, "finished": finished, "report": None}
    if finish:
        from nas_kd.finalize import pick_winner

        winner = pick_winner(study)
        if winner is None:
            _partial_report(study, log, why="no candidate within budget")
            raise UserError(f"no candidate within budget finished in study '{config['study']}' (see {config['run_dir']}/report.md): raise --trials or the budget, or use --sampler tpe, which learns the budget")
        # Exactly one worker finalises (the first to get here); the others leave it to that one.
        if not claim_finalize(study, config["storage"], key=f"trial {winner.number}"):
            owner = study.user_attrs.get(FINALIZE_ATTR, {})
            state = "finalized" if owner.get("done") else f"being finalized by {owner.get('by')}"
            log(f"search: study {config['study']} is {state}; report in {config['run_dir']}/ (redo with 'nas-kd finalize --study {config['study']}')")
            result["report"] = "elsewhere"
            return result
        log(f"search: finalizing study {config['study']} (final retrain, report, export)")
        try:
            result["report"] = finish_study(config["study"], config["storage"], device=device, teacher=teacher, log=log, show_progress=opts.progress)
        except KeyboardInterrupt:
            _partial_report(study, log)  # the search is complete; the final retrain was cut short
            raise
        mark_finalized(study)
    return result


def _partial_report(study, log: Callable[[str], None], why: str = "interrupted") -> None:
    from nas_kd.report import write_report

    paths = write_report(study, partial=True)
    log(f"search: {why}; partial report {paths['report.md']}")


def finish_study(study_name: str, storage: str | None, *, device=None, teacher=None, log=print, show_progress=None) -> dict:
    """Final retrain, report and export of a study that has a feasible winner."""
    from nas_kd.export import export_study
    from nas_kd.finalize import finalize
    from nas_kd.report import write_report
    from nas_kd.study import load_study

    final = finalize(study_name, storage, device=device, teacher=teacher, log=log, show_progress=show_progress)
    study = load_study(study_name, storage)
    paths = write_report(study, final=final)
    export_dir = export_study(study_name, storage, log=log)
    log(f"search: report {paths['report.md']}, export {export_dir}")
    return {**{k: str(v) for k, v in paths.items()}, "export": str(export_dir)}


def _add_wall(study, seconds: float) -> None:
    """Accumulate this session's wall time (all sessions of a resumed study add up)."""
    study.set_user_attr("search_wall_seconds", float(study.user_attrs.get("search_wall_seconds", 0.0)) + seconds)


def _bar(total: int | None, initial: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="trials", unit="trial", dynamic_ncols=True)

