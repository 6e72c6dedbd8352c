"""`run_search`: an Optuna study over a search space, each candidate distilled briefly.

One trial: sample a `StudentConfig`, cost it (the analytic model first, ~1 ms; fvcore only for
candidates within budget), record the budget as Optuna constraints (`Trial.set_constraint`, which
TPE and NSGA-II read), and either reject it untrained (over budget: value 0.0 accuracy, user attr
``feasible=False``) or distil it with the preset's *brief* schedule and return its validation
accuracy. Data and teacher are loaded once per process. How the study is named, resumed and
stopped is in docs/SEARCH.md; how ``--jobs N`` runs N trial processes on one machine is in
`nas_kd.jobs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from optuna.pruners import BasePruner

from nas_kd.errors import UserError, one_line
from nas_kd.meter import TABLE_LATENCY_ATTR, BudgetMeter
from nas_kd.plan import (
    OBJECTIVES,
    PLAN_ATTR,
    SAMPLERS,
    SearchOptions,
    SearchPlan,
    build_plan,
    describe_schedule_changes,
    parse_objectives,
    plan_of,
)
from nas_kd.proposals import BudgetSampler
from nas_kd.storage import open_storage
from nas_kd.study import (
    INTERRUPTED,
    STOP_ATTR,
    check_settings,
    finished_trials,
    is_feasible,
    trial_counts,
    write_json,
)
from nas_kd.train import NonFiniteLossError

__all__ = [
    "SearchOptions",
    "Objective",
    "SAMPLERS",
    "OBJECTIVES",
    "run_search",
    "run_worker",
    "finish_study",
    "make_sampler",
    "parse_objectives",
    "failure_types",
    "trial_line",
]

# Stop a session once this many over-budget candidates per wanted trial were rejected: a budget
# almost nothing fits would otherwise fill the study with rejections.
REJECTIONS_PER_TRIAL = 50


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


def make_sampler(name: str, seed: int, multi: bool, startup_trials: int = 10):
    """``startup_trials``: TPE's random candidates before it models (the enqueued baseline counts)."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=not multi, n_startup_trials=startup_trials)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler '{name}': choose one of {', '.join(SAMPLERS)}")


def failure_types() -> tuple[type[Exception], ...]:
    """Exceptions that fail one trial and let the study go on (Optuna's ``catch``)."""
    return (NonFiniteLossError, torch.cuda.OutOfMemoryError)


class Objective:
    """Optuna objective: cost, reject or distil one candidate (see module docstring)."""

    def __init__(self, plan: SearchPlan, *, teacher, device: torch.device, prune: bool, table=None, shared_cache: Path | None = None, log: Callable[[str], None] | None = None):
        self.plan, self.space, self.budget = plan, plan.space, plan.budget
        self.shape, self.num_classes = plan.input_shape, plan.num_classes
        self.schedule, self.mode, self.multi = plan.brief, plan.mode, plan.multi
        self.teacher, self.device, self.prune = teacher, device, prune
        self.meter = BudgetMeter(plan.budget, plan.input_shape, plan.num_classes, plan.space, table=table)  # `_latency_table`
        self._splits = self._loaders = None
        self._cache = self._attention = None
        self._shared, self._log = shared_cache, log  # a --jobs child: the parent's filled cache (`share_cache`)

    def data(self):
        """The brief schedule's splits and device loaders, loaded on first use and then reused."""
        if self._splits is None:
            from nas_kd.data import load_splits
            from nas_kd.train import make_loaders

            self._splits = load_splits(self.plan.dataset, self.plan.data_dir, seed=self.plan.seeds.split, train_subset=self.schedule.train_subset)
            self._loaders = make_loaders(self._splits, batch_size=self.schedule.batch_size, device=self.device, seed=self.plan.seeds.search, crop=self.schedule.crop)
            # The frozen teacher's outputs, once per study: every trial reuses them, and a --jobs
            # child opens the parent's instead of filling its own.
            from nas_kd.distill.trainer import MAX_CACHE_BYTES, prepare_teacher

            self._cache, self._attention = prepare_teacher(
                self.teacher, self._loaders[0], self.mode, self.num_classes, teacher_cache=self._open_shared(), teacher_attention=None, max_cache_bytes=MAX_CACHE_BYTES, input_shape=self.shape, log=None
            )
        return self._splits, self._loaders

    def _open_shared(self):
        """The parent's filled teacher cache (a --jobs child), or None: none was shared, or it
        does not fit this process (said in one line; the caller fills its own)."""
        from nas_kd.distill.shared_cache import open_cache

        if self._shared is None or self.teacher is None:
            return None
        cache, why = open_cache(self._shared, self.teacher, self._loaders[0], self.mode)
        if self._log:
            self._log(f"search: the teacher's outputs opened from {self._shared}, not computed again" if cache is not None else f"search: the parent's teacher cache is not usable here ({why}); filling this process's own")
        return cache

    @property
    def teacher_cache(self):
        """The teacher cache this process's trials read (None before the first trial, or when they run the teacher live)."""
        return self._cache

    def share_cache(self, path: Path):
        """A context: this process's teacher cache (filled now if it is not yet) written to
        ``path`` for `--jobs` children to open while it lasts; yields the path, or None when
        the trials have no cache (no teacher, random crops, too large)."""
        from nas_kd.distill.shared_cache import shared_file

        self.data()
        return shared_file(self._cache, path)

    def prepare(self, trial) -> None:
        """Draw the candidate (the sampler repairs it into the budget band) and store its
        parameters; `nas_kd.workers` calls this under the study lock."""
        self.space.sample(trial)

    def _values(self, accuracy: float, macs: int):
        return (accuracy, float(macs)) if self.multi else accuracy

    def __call__(self, trial):
        import optuna

        from nas_kd.cost import Cost, measure
        from nas_kd.distill import train
        from nas_kd.models.student import build_student

        cfg = self.space.sample(trial)
        trial.set_user_attr("config", cfg.to_json())
        trial.set_user_attr("describe", cfg.describe())
        self.meter.correct_from(trial.study.get_trials(deepcopy=False))  # latency: the study's own measurements
        values = self.meter.values(cfg)  # exact, except latency: predicted by the table, corrected
        trial.set_user_attr("analytic_macs", values["macs"])
        trial.set_user_attr("analytic_params", values["params"])
        memory, size = self.meter.deployment_bytes(cfg)  # exact and cheap: recorded for every trial's report row
        trial.set_user_attr("memory_bytes", memory)
        trial.set_user_attr("size_bytes", size)
        if "latency" in values:
            trial.set_user_attr("predicted_latency_ms", values["latency"])  # at the slowest speed seen (nas_kd.meter)
            trial.set_user_attr(TABLE_LATENCY_ATTR, self.meter.table_rulers(cfg))
            trial.set_user_attr("slowest_ruler_ms", self.meter.slowest_ms())
        if self.budget.fits(**values):
            cost = measure(cfg, self.shape, self.num_classes)  # fvcore: the reference count
            values.update(macs=cost.macs, params=cost.params)
            if "latency" in values and self.meter.needs_measuring(values["latency"]):
                # Too close to the limit to trust the prediction: measured before any training.
                latency, values["latency"] = self.meter.measure_for_limit(cfg)  # judged at the slowest speed seen
                trial.set_user_attr("latency_ms", latency.median_ms)  # as measured at that moment
                trial.set_user_attr("latency_ruler_ms", latency.ruler_ms)  # the machine's speed then
                trial.set_user_attr("latency_rulers", latency.rulers)
                trial.set_user_attr("latency_slowest_ms", values["latency"])
                trial.set_user_attr("slowest_ruler_ms", self.meter.slowest_ms())
        feasible = self.budget.fits(**values)
        violations = self.budget.violations(**values)
        with warnings.catch_warnings():
            # A trial retried after its worker died carries the dead trial's system attributes,
            # constraints included (Optuna's retry callback copies them): same config, same
            # values, and Optuna keeps the first while warning about the second.
            warnings.filterwarnings("ignore", message="The constraint value is ignored")
            for key, value in zip(self.budget.limits(), violations, strict=True):
                trial.set_constraint(key, value)
        trial.set_user_attr("constraints", violations)
        trial.set_user_attr("macs", values["macs"])
        trial.set_user_attr("params", values["params"])
        trial.set_user_attr("feasible", feasible)
        cost = Cost(values["macs"], values["params"])
        if not feasible:
            return self._values(0.0, cost.macs)

        from nas_kd.train import reset_finite_checks

        splits, loaders = self.data()
        reset_finite_checks()  # nothing deferred from an earlier trial is blamed on this one
        seed = self.plan.seeds.search
        loaders[0].generator.manual_seed(seed)  # every candidate sees the same batch order
        torch.manual_seed(seed)  # every candidate starts from the same seed
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
            metrics = train(student, self.teacher, splits, self.schedule, self.mode, device=self.device, seed=seed, epoch_callback=on_epoch, show_progress=False, loaders=loaders, teacher_cache=self._cache, teacher_attention=self._attention)
        except failure_types() as e:
            trial.set_user_attr("fail_reason", one_line(e, 200))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        trial.set_user_attr("train_seconds", metrics["train_seconds"])
        trial.set_user_attr("images_per_second", metrics["images_per_second"])
        if "step_graph" in metrics:
            trial.set_user_attr("step_graph", metrics["step_graph"])
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


def _budget_sampler(plan: SearchPlan, seed: int, table=None) -> BudgetSampler:
    return BudgetSampler(make_sampler(plan.sampler, seed, plan.multi, plan.startup_trials), plan.space, plan.budget, plan.input_shape, plan.num_classes, min_fill=plan.min_fill, seed=seed, table=table)


def _latency_table(plan: SearchPlan):
    """One latency table per process for a latency budget, shared by the sampler, the enqueued
    baseline and the objective: each table object times its own ruler, and on a VM whose speed
    drifts a student proposed or enqueued at one timing could be rejected, untrained, at a slower
    one (the uniform baseline of a fresh-clone `latency:0.2ms` search never reached its re-screen).
    None for other budgets (they never read one)."""
    if plan.budget.latency is None:
        return None
    from nas_kd.latency import LatencyTable

    return LatencyTable()


def _pruner(plan: SearchPlan, log: Callable[[str], None]):
    import optuna

    if plan.multi:
        log("search: two objectives, so no pruning (Optuna prunes single-objective studies only)")
        return optuna.pruners.NopPruner()
    if not plan.prune:
        log(f"search: no pruning ({'the ' + plan.preset.name + ' preset' if plan.prune == plan.preset.prune else '--no-prune'}): every candidate finishes its brief run")
        return optuna.pruners.NopPruner()
    start = plan.prune_from_epoch
    if plan.brief.epochs <= start:
        log(f"search: the brief schedule has {plan.brief.epochs} epoch(s) and pruning starts after epoch {start}, so nothing is pruned (a trial is never pruned at its last epoch)")
    else:
        log(f"search: a brief run below the median of the finished ones may be stopped after epoch {', '.join(map(str, range(start, plan.brief.epochs)))} (once 5 candidates have finished)")
    # Epochs are reported as steps 1, 2, ...: Optuna's MedianPruner ignores steps below n_warmup_steps.
    return TrainedMedianPruner(n_startup_trials=5, n_warmup_steps=start)


def _open_study(plan: SearchPlan, log: Callable[[str], None], table=None):
    import optuna

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(plan.storage, heartbeat_interval=plan.heartbeat)
    try:
        existing = optuna.load_study(study_name=plan.study, storage=storage)
    except KeyError:
        existing = None
    if existing is not None and PLAN_ATTR in existing.user_attrs:
        stored = plan_of(existing)
        check_settings(stored.settings(), plan.settings(), plan.study, own_command=stored.command())
    previous = len(existing.trials) if existing is not None else 0
    # A resumed session must not replay the first session's random draws: offset the seed.
    sampler = _budget_sampler(plan, plan.seeds.search + previous, table)
    directions = ["maximize", "minimize"] if plan.multi else ["maximize"]
    study = optuna.create_study(study_name=plan.study, storage=storage, sampler=sampler, pruner=_pruner(plan, log), directions=directions, load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 3.2 in practice
        study.set_metric_names(["val_accuracy", "macs"] if plan.multi else ["val_accuracy"])
    study.set_user_attr(PLAN_ATTR, plan.to_dict())  # settings are equal; trials, seeds, device follow this session
    if existing is None:
        _enqueue_baseline(study, plan, log, table)
    study.set_user_attr(STOP_ATTR, None)
    return study, previous


# Sampler seeds of a search's worker processes lie this far apart, so that N samplers started on
# the same study at once do not propose the same stream of students.
WORKER_SEED_STRIDE = 100_003


def _join_study(plan: SearchPlan, worker: int, table=None):
    """The study the parent of a ``--jobs`` search opened: loaded, never created or re-stamped."""
    import optuna

    storage = open_storage(plan.storage, heartbeat_interval=plan.heartbeat)
    study = optuna.load_study(study_name=plan.study, storage=storage)
    check_settings(plan_of(study).settings(), plan.settings(), plan.study)
    seed = plan.seeds.search + len(study.trials) + worker * WORKER_SEED_STRIDE
    return optuna.load_study(study_name=plan.study, storage=storage, sampler=_budget_sampler(plan, seed, table), pruner=_pruner(plan, lambda _: None))


def _trial_loop(study, plan: SearchPlan, objective: Objective, after_trial: Callable) -> int:
    """Trials until the study holds ``plan.trials`` trained ones (claims under the study lock,
    heartbeats, retries of dead workers' trials: see nas_kd.workers); returns trials run here."""
    from nas_kd.workers import run_trials

    def too_many_rejections() -> bool:
        rejected = trial_counts(study.get_trials(deepcopy=False)).rejected
        if rejected > REJECTIONS_PER_TRIAL * (plan.trials or 20):
            study.set_user_attr(STOP_ATTR, f"stopped after {rejected} over-budget candidates; raise the budget or narrow the space")
            return True
        return False

    return run_trials(study, objective, url=plan.storage, target=plan.trials, timeout=plan.timeout, catch=failure_types(), after_trial=after_trial, should_stop=too_many_rejections, prepare=objective.prepare)


def run_worker(plan: SearchPlan, *, worker: int, log: Callable[[str], None] = print, teacher_cache: Path | None = None) -> int:
    """One child process of a ``--jobs`` search (`nas_kd.jobs`): the parent's bound plan, its
    exact teacher file and (``teacher_cache``) its filled teacher cache, trials until the study
    has them. Never finalises. Returns trials run."""
    import optuna

    from nas_kd.data import dataset_info
    from nas_kd.device import configure_step, resolve_device
    from nas_kd.models.teachers import load_verified

    configure_step(plan.step)
    device = resolve_device(plan.device)
    teacher = None
    if plan.mode.uses_teacher:
        ref = plan.teacher
        loaded = load_verified(ref.path, ref.sha256, dataset_info(plan.dataset, plan.data_dir), device)
        if loaded is None:
            raise UserError(f"the teacher file {ref.path} is gone or changed since the search started (SHA-256 {ref.sha256[:12]}): restore it and run the search again")
        teacher = loaded[0]
        log(f"teacher: worker {worker} loads {ref.path} (sha256 {ref.sha256[:12]})")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = _latency_table(plan)
    study = _join_study(plan, worker, table)
    objective = Objective(plan, teacher=teacher, device=device, prune=plan.prune, table=table, shared_cache=teacher_cache, log=lambda text: log(f"{text} [worker {worker}]"))
    if plan.mode.uses_teacher:
        objective.data()  # data and teacher cache ready before the first claim, not inside a trial's time
    ran = _trial_loop(study, plan, objective, after_trial=lambda _st, t: log(f"{trial_line(t)} [worker {worker}]"))
    if isinstance(study.sampler, BudgetSampler) and study.sampler.counts.proposals:
        log(f"search: worker {worker}: {study.sampler.counts.describe()}")
    return ran


def _enqueue_baseline(study, plan: SearchPlan, log: Callable[[str], None], table=None) -> None:
    """The hand-scaled answer is the study's first candidate: the search starts from it."""
    try:
        base = plan.space.baseline(plan.budget, plan.input_shape, plan.num_classes, table=table)
    except UserError:
        return  # no uniform member fits (only possible with --no-baselines)
    study.enqueue_trial(plan.space.params_of(base), user_attrs={"baseline": True})
    log(f"search: the uniform baseline {base.describe()} is the first candidate")


def run_search(opts: SearchOptions, *, log: Callable[[str], None] = print, finish: bool = True) -> dict:
    """Create or resume the study, run trials until ``--trials`` trained candidates ended (or
    ``--timeout``), then (``finish``) retrain the winner, write the report and export it.

    Every option is checked (`build_plan`) before the teacher is trained or any file written.
    Returns {"study", "storage", "run_dir", "new_trials", "finished", "report": paths or None,
    "verdict": the sentence or None}. A Ctrl-C fails the running trial, writes a partial report
    and re-raises KeyboardInterrupt.
    """
    from nas_kd.mps import device_sharing

    plan = build_plan(opts)
    # After the options are checked, before this process initialises CUDA (nothing before it does).
    with device_sharing(plan.step.mps, plan.jobs, plan.device, log):
        return _search(plan, opts, log=log, finish=finish)


def bind_teacher(plan: SearchPlan, device, log: Callable[[str], None] = print):
    """(the plan bound to its teacher's file, the teacher) as a search trains with them: the
    teacher resolved (trained, if missing) and its file's SHA-256 and seed in the plan, which are
    settings a study keeps (`SearchPlan.settings`); (plan, None) in a mode without a teacher."""
    from nas_kd.models.teachers import resolve_teacher

    if not plan.mode.uses_teacher:
        log(f"search: mode {plan.mode.name} learns from labels alone; no teacher is loaded or trained")
        return plan, None
    ref = plan.teacher
    teacher, meta, path = resolve_teacher(ref.spec, plan.dataset, plan.preset.teacher, preset=plan.preset.name, seed=plan.seeds.split, device=device, data_dir=plan.data_dir, reconstruction=ref.reconstruction, log=log)
    return plan.with_teacher(meta, path), teacher


def _search(plan: SearchPlan, opts: SearchOptions, *, log: Callable[[str], None], finish: bool) -> dict:
    """`run_search` once the plan is checked (and the device's sharing set up)."""
    import optuna

    from nas_kd.device import StepOptions, configure_step, resolve_device, torch_threads
    from nas_kd.distill.shared_cache import CACHE_FILE
    from nas_kd.jobs import LocalWorkers, threads_per_job
    from nas_kd.meter import BudgetMeter, admits_largest
    from nas_kd.workers import FINALIZE_ATTR, claim_finalize, mark_finalized

    configure_step(plan.step)
    device = resolve_device(plan.device)
    mode = plan.mode
    changed = describe_schedule_changes(plan.schedule_changes())
    log(f"search: preset {plan.preset.name} (brief {plan.brief.epochs} epoch(s) on {plan.brief.train_subset or 'all'} examples{'; ' + changed if changed else ''}; device {device.type}), budget {plan.budget.describe()}, mode {mode.describe()}")
    if plan.step != StepOptions():
        # Said once: a CPU run given GPU switches (graph, bf16...) would otherwise ignore them silently.
        log(f"search: GPU step {plan.step.describe()}" + ("; a CPU applies only check_every" if device.type == "cpu" else ""))
    table = _latency_table(plan)
    unbound = admits_largest(BudgetMeter(plan.budget, plan.input_shape, plan.num_classes, plan.space, table=table), plan.space)
    if unbound:
        log(f"search: {unbound}; the students it trains are near the space's largest (the slowest to train), and a tighter budget is what would constrain them")
    if plan.sampler == "nsga2" and not plan.multi:
        log("search: NSGA-II on one objective is a genetic algorithm; TPE is usually better there")

    # Resolved (trained, if missing) here, once: --jobs children load this exact file by path.
    plan, teacher = bind_teacher(plan, device, log)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, previous = _open_study(plan, log, table)
    write_json(plan.run_dir / "config.json", plan.to_dict())
    log(f"search: study {plan.study} in {plan.storage} ({previous} trials so far)")

    target = plan.trials
    objective = Objective(plan, teacher=teacher if mode.uses_teacher else None, device=device, prune=plan.prune, table=table)
    done = len(finished_trials(study.get_trials(deepcopy=False)))
    new_trials, start = 0, time.perf_counter()
    bar = _bar(target, done, opts.progress)

    workers = LocalWorkers(dataclasses.replace(plan, device=str(device)), log)

    def after_trial(st, t) -> None:
        nonlocal new_trials
        new_trials += 1
        workers.poll()
        finished = finished_trials(st.get_trials(deepcopy=False))
        line = trial_line(t)
        if bar is not None:
            bar.n = min(len(finished), bar.total or len(finished))
            bar.refresh()
            bar.write(line)
        else:
            log(line)

    try:
        with contextlib.ExitStack() as stack, workers:  # the children stop before the shared cache file goes
            if target is not None and done >= target:
                log(f"search: {done} of {target} trials already finished; nothing to run")
            else:
                # More processes than trials left would start only to leave again.
                extra = plan.jobs - 1 if target is None else min(plan.jobs - 1, target - done - 1)
                threads = threads_per_job(extra + 1)
                if extra > 0:
                    log(f"search: {extra + 1} trial processes on this machine (--jobs {plan.jobs}), {threads} torch thread(s) each")
                    # The teacher's outputs filled once, here, and opened by every child.
                    if mode.uses_teacher and not plan.brief.crop:
                        log("search: filling the teacher's outputs on the training data once, for every trial process")
                    shared = stack.enter_context(objective.share_cache(plan.run_dir / CACHE_FILE))
                    if shared is not None:
                        log(f"search: the teacher's outputs ({objective.teacher_cache.nbytes / 2**20:.0f} MiB) filled once, shared with the trial processes through {shared}")
                    workers.start(extra, threads, teacher_cache=shared)
                with torch_threads(threads if extra > 0 else torch.get_num_threads()):
                    _trial_loop(study, plan, objective, after_trial)
                workers.wait()  # the children leave once the study has its trials
    except KeyboardInterrupt:
        workers.stop()  # each child records its interrupted trial before the partial report
        study.set_user_attr(STOP_ATTR, INTERRUPTED)
        _add_wall(study, time.perf_counter() - start)
        if bar is not None:
            bar.close()
        _partial_report(study, log)
        raise
    if bar is not None:
        bar.close()
    _add_wall(study, time.perf_counter() - start)
    counts = trial_counts(study.get_trials(deepcopy=False))
    if plan.timeout is not None and target is not None and counts.finished < target and not study.user_attrs.get(STOP_ATTR):
        study.set_user_attr(STOP_ATTR, f"--timeout {plan.timeout:g} s reached")
    if study.user_attrs.get(STOP_ATTR):
        log(f"search: {study.user_attrs[STOP_ATTR]}")
    proposals = study.sampler.counts if isinstance(study.sampler, BudgetSampler) else None
    if proposals is not None and proposals.proposals:
        log(f"search: {proposals.describe()}")
    log(f"search: trials: {counts.describe()}")
    result = {"study": plan.study, "storage": plan.storage, "run_dir": str(plan.run_dir), "new_trials": new_trials, "finished": counts.finished, "report": None, "verdict": None, "proposals": proposals}
    if finish:
        from nas_kd.finalize import confirm_winner, over_latency_limit

        winner = confirm_winner(study, log)
        if winner is None:
            _partial_report(study, log, why="no candidate within budget")
            raise UserError(f"no candidate within budget finished in study '{plan.study}' (see {plan.run_dir}/report.md): raise --trials or the budget, or use --sampler tpe, which learns the budget")
        # Exactly one worker finalises (the first to get here); the others leave it to that one.
        from nas_kd.rescreen import candidates_key

        if not claim_finalize(study, plan.storage, key=candidates_key(study, plan.rescreen, over_latency_limit(study))):
            owner = study.user_attrs.get(FINALIZE_ATTR, {})
            state = "finalized" if owner.get("done") else f"being finalized by {owner.get('by')}"
            log(f"search: study {plan.study} is {state}; report in {plan.run_dir}/ (redo with 'nas-kd finalize --study {plan.study}')")
            result["report"] = "elsewhere"
            return result
        log(f"search: finalizing study {plan.study} (final retrain, report, export)")
        try:
            # The brief trials' teacher cache serves the retrain too when both schedules train on the same data without crops.
            done_paths = finish_study(plan.study, plan.storage, device=device, teacher=teacher, teacher_cache=objective.teacher_cache, log=log, show_progress=opts.progress)
        except KeyboardInterrupt:
            _partial_report(study, log)  # the search is complete; the final retrain was cut short
            raise
        result["verdict"] = done_paths.pop("verdict")
        result["report"] = done_paths
        mark_finalized(study)
    return result


def _partial_report(study, log: Callable[[str], None], why: str = "interrupted") -> None:
    from nas_kd.report import write_report

    paths = write_report(study, partial=True)
    log(f"search: {why}; partial report {paths['report.md']}")


def finish_study(study_name: str, storage: str | None, *, retrain_seeds: int | None = None, baselines: bool | None = None, device=None, teacher=None, teacher_cache=None, jobs: int | None = None, log=print, show_progress=None) -> dict:
    """Final retrain, report and export of a study that has a feasible winner: the one path that
    `nas-kd search` and `nas-kd finalize` share (``teacher_cache``: see `finalize`). Returns the
    report and export paths and the verdict sentence (key ``verdict``)."""
    from nas_kd.export import export_study
    from nas_kd.finalize import finalize
    from nas_kd.report import write_report
    from nas_kd.study import load_study

    final = finalize(study_name, storage, retrain_seeds=retrain_seeds, baselines=baselines, device=device, teacher=teacher, teacher_cache=teacher_cache, jobs=jobs, log=log, show_progress=show_progress)
    study = load_study(study_name, storage)
    paths = write_report(study, final=final)
    export_dir = export_study(study_name, storage, log=log)
    report = json.loads(Path(paths["report.json"]).read_text())
    log(f"search: report {paths['report.md']}, export {export_dir}")
    return {**{k: str(v) for k, v in paths.items()}, "export": str(export_dir), "verdict": report["verdict"]}


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

