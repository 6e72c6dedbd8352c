"""`SearchPlan`: every setting of one search, resolved and validated once.

`build_plan(options)` turns what the user typed (`SearchOptions`) into a frozen `SearchPlan`
*before* any teacher is trained or any file written: budget, space, dataset, mode and its
loss-weight overrides, sampler, objectives, preset, study name, storage URL, and whether anything
in the space (and a uniform baseline) fits the budget. Bad input is a one-line `UserError` there
and nothing else happens. Once the teacher is resolved, `SearchPlan.with_teacher` binds its file,
hash and split seed; that plan is stored with the study (user attribute ``nas_kd_plan``) and in
``runs/<study>/config.json``, and `search`, `finalize`, `report` and `export` all read it
(`plan_of(study)`), so a study can be finalised later, elsewhere, from its storage alone.

Seeds have one name each: ``seeds.search`` drives the sampler, the batch order and every
candidate's initial weights; ``seeds.split`` is the cached teacher's seed and so the validation
split the teacher left out (any other split would validate on examples the teacher trained on);
``seeds.retrain`` are the final retrain's seeds, disjoint from ``seeds.search`` so that the winner
gets no luck the baseline never had (the search selected it with exactly that init and order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from nas_kd.config import (
    DEFAULT_PRECISION,
    PRESETS,
    Budget,
    Preset,
    Schedule,
    get_preset,
    override_schedule,
    parse_budget,
    schedule_overrides,
)
from nas_kd.device import StepOptions
from nas_kd.distill.modes import Mode, get_mode, parse_loss_weights
from nas_kd.errors import UserError

__all__ = [
    "SearchOptions",
    "TeacherRef",
    "Seeds",
    "SearchPlan",
    "build_plan",
    "describe_schedule_changes",
    "plan_of",
    "PLAN_ATTR",
    "PLAN_FORMAT",
    "SAMPLERS",
    "OBJECTIVES",
    "parse_objectives",
]

PLAN_ATTR = "nas_kd_plan"
PLAN_FORMAT = "nas-kd-plan/1"
SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVES = ("accuracy", "accuracy,macs")


@dataclass
class SearchOptions:
    """Everything `nas-kd search` accepts, as typed; None means "the documented default"."""

    budget: str = "2M"
    precision: str = DEFAULT_PRECISION  # of the memory: and size: limits (int8 or fp32)
    space: str = "search_spaces/mbv2.yaml"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    teacher: str = "default"  # the shipped teacher of the dataset (nas_kd.models.shipped)
    teacher_recon: bool = False
    mode: str | None = None  # None: the preset's (kd on both since 2026-12-07; full on standard before)
    loss_weights: str | None = None
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
    min_fill: float = 0.85  # every proposal uses at least this share of its binding limit (nas_kd.proposals)
    rescreen: int | None = None  # the best K candidates are trained again on the full schedule before the winner is chosen (nas_kd.rescreen); None: the preset's (3 on both)
    startup_trials: int = 10  # TPE draws this many candidates at random before it models (Optuna's default; nas_kd.search.make_sampler)
    prune: bool | None = None  # stop brief runs below the median after an epoch; None: the preset's (off on quick, on on standard)
    prune_from_epoch: int | None = None  # the first epoch after which a brief run may be stopped; None: the preset's (2 on standard)
    teacher_seed: int = 0  # the cached teacher's seed, and the seed of the validation split it left out
    jobs: int | None = None  # trial processes on this machine; None: the device's default (nas_kd.jobs.default_jobs)
    brief: str | None = None  # overrides of the preset's brief schedule, e.g. "epochs=2,batch_size=512,crop=0"
    full: str | None = None  # overrides of the preset's full schedule (re-screen and final retrain)
    gpu_step: str | None = None  # the GPU step's switches (nas_kd.device.parse_step_options); None: the defaults


@dataclass(frozen=True)
class TeacherRef:
    """Which teacher: what the user asked for, and once resolved, the exact file (by hash)."""

    spec: str  # "default" (shipped), a registry name ("resnet20") or a checkpoint / TorchScript path
    reconstruction: bool = False
    path: str | None = None
    sha256: str | None = None
    arch: str | None = None
    test_accuracy: float | None = None
    val_accuracy: float | None = None

    @property
    def resolved(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class Seeds:
    """See the module docstring: one name per seed."""

    search: int
    split: int
    retrain: tuple[int, ...]

    @classmethod
    def make(cls, search: int, split: int, retrain_count: int) -> Seeds:
        if retrain_count < 1:
            raise UserError(f"--retrain-seeds must be at least 1, got {retrain_count}")
        return cls(search=search, split=split, retrain=tuple(search + 1 + i for i in range(retrain_count)))


def parse_objectives(text: str) -> tuple[str, ...]:
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if ",".join(names) not in OBJECTIVES:
        raise UserError(f"invalid --objectives '{text}': use {' or '.join(OBJECTIVES)}")
    return tuple(names)


@dataclass(frozen=True)
class SearchPlan:
    study: str
    storage: str
    budget: Budget
    space_path: str
    space_yaml: str
    dataset: str
    data_dir: str | None
    input_shape: tuple[int, int, int]
    num_classes: int
    teacher: TeacherRef
    mode_name: str
    loss_weights: tuple[tuple[str, float], ...]  # overrides of the mode's weights and knobs
    preset: Preset
    sampler: str
    objectives: tuple[str, ...]
    trials: int | None
    timeout: float | None
    seeds: Seeds
    baselines: bool
    device: str
    heartbeat: int
    min_fill: float = 0.85
    rescreen: int = 0  # see SearchOptions.rescreen; 0 in plans stored before it existed
    startup_trials: int = 10  # see SearchOptions.startup_trials; plans stored before it existed used Optuna's 10
    prune: bool = True  # see SearchOptions.prune; plans stored before it existed pruned
    prune_from_epoch: int = 1  # see SearchOptions.prune_from_epoch; plans stored before it existed pruned from epoch 1
    jobs: int = 1  # trial processes on this machine (one session's choice, like the device)
    step: StepOptions = StepOptions()
    # The mode resolved when the plan was made: a study trains with the knobs it began with, even
    # after a default changes. None in plans stored before it was kept: today's defaults.
    resolved_mode: Mode | None = None
    versions: dict[str, str] = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------------ derived, never stored

    @cached_property
    def space(self):
        """The space exactly as searched: parsed from the stored YAML text, once per plan."""
        from nas_kd.space import SearchSpace

        return SearchSpace.from_yaml(self.space_yaml, source=self.space_path)

    @property
    def mode(self) -> Mode:
        """The distiller `Mode`: as resolved when the plan was made (overrides applied)."""
        if self.resolved_mode is not None:
            return self.resolved_mode
        return get_mode(self.mode_name).override(dict(self.loss_weights))

    def mode_overrides(self) -> dict[str, float]:
        """The `--loss-weights` that give today's `--mode` this plan's mode: its own overrides,
        plus any default changed since the plan was stored. Only its own when no override can
        (`Mode.changes_from`)."""
        try:
            return self.mode.changes_from(get_mode(self.mode_name))
        except ValueError:
            return dict(self.loss_weights)

    @property
    def space_sha256(self) -> str:
        return hashlib.sha256(self.space_yaml.encode()).hexdigest()

    @property
    def run_dir(self) -> Path:
        from nas_kd.study import run_dir

        return run_dir(self.study)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def brief(self) -> Schedule:
        return self.preset.brief

    @property
    def full(self) -> Schedule:
        return self.preset.full

    def schedule_changes(self) -> dict[str, str]:
        """{"brief": "batch_size=512,...", "full": ...}: how the plan's schedules differ from its
        preset's today (`--brief`, `--full`), only those that do."""
        today = PRESETS.get(self.preset.name)
        if today is None:
            return {}
        changes = {name: schedule_overrides(getattr(self.preset, name), getattr(today, name)) for name in ("brief", "full")}
        return {name: text for name, text in changes.items() if text}

    def settings(self) -> dict[str, Any]:
        """What every worker of one study must share: these change what a trial's value means."""
        return {
            "dataset": self.dataset,
            "space_sha256": self.space_sha256,
            "budget": self.budget.describe(),
            "mode": self.mode.signature(),
            "preset": self.preset.name,
            "brief": self.preset.brief.to_dict(),
            "teacher_sha256": self.teacher.sha256,
            "objectives": list(self.objectives),
            "split_seed": self.seeds.split,
        }

    def command(self) -> str:
        """The CLI line that reproduces this plan (preset and trials spelt out, so a machine with
        a GPU, whose default preset differs, runs the same thing)."""
        parts = ["nas-kd", "search", "--budget", self.budget.text, "--space", self.space_path, "--dataset", self.dataset]
        if self.budget.precision != DEFAULT_PRECISION:
            parts += ["--precision", self.budget.precision]
        parts += ["--teacher", self.teacher.path or self.teacher.spec, "--mode", self.mode_name, "--sampler", self.sampler]
        parts += ["--objectives", ",".join(self.objectives), "--study", self.study, "--preset", self.preset.name]
        parts += ["--seed", str(self.seeds.search), "--teacher-seed", str(self.seeds.split), "--retrain-seeds", str(len(self.seeds.retrain))]
        if self.min_fill != SearchOptions.min_fill:
            parts += ["--min-fill", f"{self.min_fill:g}"]
        # Against today's preset, not the stored one: the line must reproduce this plan with this
        # version, whose preset defaults may have changed since the plan was stored.
        today = PRESETS.get(self.preset.name)
        if today is None or self.rescreen != today.rescreen:
            parts += ["--rescreen", str(self.rescreen)]
        if self.startup_trials != SearchOptions.startup_trials:
            parts += ["--startup-trials", str(self.startup_trials)]
        if today is None or self.prune != today.prune:
            parts += ["--prune" if self.prune else "--no-prune"]
        if today is None or self.prune_from_epoch != today.prune_from_epoch:
            parts += ["--prune-from-epoch", str(self.prune_from_epoch)]
        if self.jobs != 1:
            parts += ["--jobs", str(self.jobs)]
        if self.step != StepOptions():
            parts += ["--gpu-step", self.step.describe()]
        overrides = self.mode_overrides()
        if overrides:
            parts += ["--loss-weights", ",".join(f"{k}={v:g}" for k, v in overrides.items())]
        for name, changed in self.schedule_changes().items():
            parts += [f"--{name}", changed]
        for flag, value in (("--trials", self.trials), ("--timeout", self.timeout), ("--data-dir", self.data_dir)):
            if value is not None:
                parts += [flag, str(value)]
        if not self.storage.startswith(f"sqlite:///{self.run_dir}"):
            parts += ["--storage", self.storage]
        if not self.baselines:
            parts.append("--no-baselines")
        return shlex.join(parts)

    # ------------------------------------------------------------------ binding and storage

    def with_teacher(self, meta: dict, path: Path) -> SearchPlan:
        """The plan bound to the resolved teacher file; its seed decides the validation split."""
        from nas_kd.files import digest

        ref = dataclasses.replace(
            self.teacher,
            path=str(path),
            sha256=digest(path),
            arch=meta.get("arch"),
            test_accuracy=meta.get("test_accuracy"),
            val_accuracy=meta.get("val_accuracy"),
        )
        seeds = dataclasses.replace(self.seeds, split=int(meta.get("seed", self.seeds.split)))
        return dataclasses.replace(self, teacher=ref, seeds=seeds)

    def with_retrain_seeds(self, count: int) -> SearchPlan:
        return dataclasses.replace(self, seeds=Seeds.make(self.seeds.search, self.seeds.split, count))

    def to_dict(self) -> dict:
        """JSON-ready; `from_dict` inverts it exactly. Derived figures ride along for readers."""
        return {
            "format": PLAN_FORMAT,
            "study": self.study,
            "storage": self.storage,
            "budget": self.budget.to_dict(),
            "space": {"path": self.space_path, "yaml": self.space_yaml, "sha256": self.space_sha256, "name": self.space.name, "size": self.space.size()},
            "dataset": {"name": self.dataset, "data_dir": self.data_dir, "input_shape": list(self.input_shape), "num_classes": self.num_classes},
            "teacher": dataclasses.asdict(self.teacher),
            "mode": {"name": self.mode_name, "loss_weights": [list(kv) for kv in self.loss_weights], "describe": self.mode.describe(), "resolved": self.mode.to_dict()},
            "preset": self.preset.to_dict(),
            "sampler": self.sampler,
            "objectives": list(self.objectives),
            "trials": self.trials,
            "timeout": self.timeout,
            "seeds": {"search": self.seeds.search, "split": self.seeds.split, "retrain": list(self.seeds.retrain)},
            "baselines": self.baselines,
            "device": self.device,
            "heartbeat": self.heartbeat,
            "min_fill": self.min_fill,
            "rescreen": self.rescreen,
            "startup_trials": self.startup_trials,
            "prune": self.prune,
            "prune_from_epoch": self.prune_from_epoch,
            "jobs": self.jobs,
            "gpu_step": self.step.to_dict(),
            "command": self.command(),
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SearchPlan:
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            raise UserError(f"not a {PLAN_FORMAT} search plan (format {d.get('format') if isinstance(d, dict) else None!r}): start a new study with this version of nas-kd")
        p = d["preset"]
        preset = Preset(name=p["name"], teacher=Schedule(**p["teacher"]), brief=Schedule(**p["brief"]), full=Schedule(**p["full"]), trials=p["trials"], mode=p.get("mode", "full"), prune=bool(p.get("prune", True)), prune_from_epoch=int(p.get("prune_from_epoch", 1)), rescreen=int(p.get("rescreen", 3)))
        data, seeds = d["dataset"], d["seeds"]
        return cls(
            study=d["study"],
            storage=d["storage"],
            budget=parse_budget(d["budget"]["text"], d["budget"].get("precision", DEFAULT_PRECISION)),
            space_path=d["space"]["path"],
            space_yaml=d["space"]["yaml"],
            dataset=data["name"],
            data_dir=data["data_dir"],
            input_shape=tuple(data["input_shape"]),
            num_classes=int(data["num_classes"]),
            teacher=TeacherRef(**d["teacher"]),
            mode_name=d["mode"]["name"],
            loss_weights=tuple((str(k), float(v)) for k, v in d["mode"]["loss_weights"]),
            preset=preset,
            sampler=d["sampler"],
            objectives=tuple(d["objectives"]),
            trials=d["trials"],
            timeout=d["timeout"],
            seeds=Seeds(search=int(seeds["search"]), split=int(seeds["split"]), retrain=tuple(int(s) for s in seeds["retrain"])),
            baselines=bool(d["baselines"]),
            device=d["device"],
            heartbeat=int(d["heartbeat"]),
            min_fill=float(d["min_fill"]),
            rescreen=int(d.get("rescreen", 0)),  # plans stored before the re-screen chose by the brief run alone
            startup_trials=int(d.get("startup_trials", SearchOptions.startup_trials)),
            prune=bool(d.get("prune", True)),  # plans stored before --no-prune existed pruned
            prune_from_epoch=int(d.get("prune_from_epoch", 1)),  # plans stored before 2026-12-07 pruned from epoch 1
            jobs=int(d.get("jobs", 1)),  # plans stored before --jobs existed ran one process
            step=StepOptions(**(d.get("gpu_step") or {})),
            resolved_mode=Mode.from_dict(d["mode"]["resolved"]) if "resolved" in d["mode"] else None,  # stored since 2026-12-07
            versions=dict(d.get("versions") or {}),
        )


def _check_numbers(opts: SearchOptions) -> None:
    if opts.trials is not None and opts.trials < 1:
        raise UserError(f"--trials must be at least 1, got {opts.trials}")
    if opts.timeout is not None and not opts.timeout > 0:
        raise UserError(f"--timeout must be positive seconds, got {opts.timeout}")
    if opts.retrain_seeds < 1:
        raise UserError(f"--retrain-seeds must be at least 1, got {opts.retrain_seeds}")
    if opts.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{opts.sampler}': choose one of {', '.join(SAMPLERS)}")
    if opts.rescreen is not None and opts.rescreen < 0:
        raise UserError(f"--rescreen must be 0 (off) or a count of candidates to train again, got {opts.rescreen}")
    if opts.startup_trials < 1:
        raise UserError(f"--startup-trials must be at least 1 (candidates drawn at random before TPE models), got {opts.startup_trials}")
    if opts.startup_trials != SearchOptions.startup_trials and opts.sampler != "tpe":
        raise UserError(f"--startup-trials applies to --sampler tpe only (this search uses {opts.sampler}): drop it or use --sampler tpe")
    if not 0.0 <= opts.min_fill <= 1.0:
        raise UserError(f"--min-fill must be between 0 and 1 (a share of the budget), got {opts.min_fill}")
    if opts.heartbeat < 1:
        raise UserError(f"--heartbeat must be at least 1 second, got {opts.heartbeat}")
    if opts.prune_from_epoch is not None and opts.prune_from_epoch < 1:
        raise UserError(f"--prune-from-epoch must be at least 1 (the first epoch after which a brief run may be stopped), got {opts.prune_from_epoch}")
    if opts.jobs is not None and opts.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (trial processes on this machine), got {opts.jobs}")


def _check_storage(url: str | None) -> None:
    """A bad URL or an unreachable server fails here, before any teacher or folder. A SQLite
    file is created on first use, so only its URL is checked."""
    from nas_kd.storage import is_sqlite, normalise_url, open_storage

    if url and not is_sqlite(normalise_url(url)):
        open_storage(url, heartbeat_interval=None).engine.dispose()


def _check_budget_fits(space, budget: Budget, shape: tuple[int, int, int], num_classes: int, baselines: bool) -> None:
    from nas_kd.meter import BudgetMeter, describe_values

    smallest = BudgetMeter(budget, shape, num_classes, space).values(space.smallest())
    if not budget.fits(**smallest):
        raise UserError(f"budget {budget.describe()} is below the smallest member of {space.name} ({describe_values(budget, smallest)}): raise the budget")
    if baselines:
        space.baseline(budget, shape, num_classes)  # UserError when no uniform member fits


def build_plan(opts: SearchOptions) -> SearchPlan:
    """Validate every option and resolve every default; the teacher is left unresolved (see
    `SearchPlan.with_teacher`). Raises `UserError` before anything is trained or written."""
    import torch

    import nas_kd
    from nas_kd.data import dataset_info, require_files
    from nas_kd.device import parse_step_options, resolve_device
    from nas_kd.jobs import default_jobs
    from nas_kd.space import SearchSpace
    from nas_kd.study import default_storage, default_study_name, run_dir

    _check_numbers(opts)
    budget = parse_budget(opts.budget, opts.precision)
    objectives = parse_objectives(opts.objectives)
    overrides = parse_loss_weights(opts.loss_weights)
    preset = get_preset(opts.preset)
    # Schedule's own checks run on the result.
    preset = dataclasses.replace(preset, brief=override_schedule(preset.brief, opts.brief, "--brief"), full=override_schedule(preset.full, opts.full, "--full"))
    mode_name = opts.mode or preset.mode
    get_mode(mode_name)  # unknown mode: UserError now
    step = parse_step_options(opts.gpu_step)
    jobs = opts.jobs if opts.jobs is not None else default_jobs(resolve_device(opts.device))
    space, space_yaml = SearchSpace.read(opts.space)
    info = dataset_info(opts.dataset, opts.data_dir)
    study = opts.study or default_study_name(info.name, space.name, budget.slug())
    run_dir(study)  # UserError for names that are no folder name
    _check_storage(opts.storage)
    _check_budget_fits(space, budget, info.input_shape, info.num_classes, opts.baselines)
    require_files(info.name, opts.data_dir)  # the last check: it may fetch the files
    trials = opts.trials if opts.trials is not None or opts.timeout is not None else preset.trials
    return SearchPlan(
        study=study,
        storage=opts.storage or default_storage(study),
        budget=budget,
        space_path=str(opts.space),
        space_yaml=space_yaml,
        dataset=info.name,
        data_dir=opts.data_dir,
        input_shape=tuple(info.input_shape),
        num_classes=info.num_classes,
        teacher=TeacherRef(spec=opts.teacher, reconstruction=opts.teacher_recon),
        mode_name=mode_name,
        loss_weights=tuple(overrides.items()),
        preset=preset,
        sampler=opts.sampler,
        objectives=objectives,
        trials=trials,
        timeout=opts.timeout,
        seeds=Seeds.make(opts.seed, opts.teacher_seed, opts.retrain_seeds),
        baselines=opts.baselines,
        device=opts.device,
        heartbeat=opts.heartbeat,
        min_fill=opts.min_fill,
        rescreen=preset.rescreen if opts.rescreen is None else opts.rescreen,
        startup_trials=opts.startup_trials,
        prune=preset.prune if opts.prune is None else opts.prune,
        prune_from_epoch=preset.prune_from_epoch if opts.prune_from_epoch is None else opts.prune_from_epoch,
        jobs=jobs,
        step=step,
        resolved_mode=get_mode(mode_name).override(overrides),
        versions={"nas_kd": nas_kd.__version__, "torch": str(torch.__version__), "python": platform.python_version()},
    )


def describe_schedule_changes(changes: dict[str, str]) -> str:
    """'brief schedule changed: batch_size=512; full schedule changed: epochs=1' ('' for none):
    how the start line and the report name `SearchPlan.schedule_changes`."""
    return "; ".join(f"{name} schedule changed: {text}" for name, text in changes.items())


def plan_of(study) -> SearchPlan:
    """The plan a study was searched with; `UserError` if it was not made by `nas-kd search`."""
    stored = study.user_attrs.get(PLAN_ATTR)
    if not isinstance(stored, dict):
        raise UserError(f"study '{study.study_name}' was not made by this version of 'nas-kd search' (no {PLAN_ATTR} attribute): start a new study")
    return SearchPlan.from_dict(stored)
