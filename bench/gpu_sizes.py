"""How big each `bench.gpu` section is: the GPU run (`GPU`) and its CPU miniature (`SMOKE`).

The GPU lent here is an H100 by default (the first runs, 2026-12-04, had an H200: the same processor
with faster memory, so a launch-bound step times alike); a GPU session gets 15
minutes of device time: the machine's start, one 10-minute call and at most a shorter second one. The estimates are the GPU
seconds the runner paces that call with. Until 2026-12-04 they came from counting kernel launches
(~12 ms per full step, a brief trial ~9 s); the first GPU call (docs/BENCHMARKS.md, "What the first
GPU session showed") measured far slower steps, bound by the host's launches and Python with the
device busy 12% of a step: 38-41 ms per full step at batch 256, a whole 2M brief trial (3 epochs,
mode full, one process) 30-42 s (mean 36), 23 s per trial with the pruner, and so ~12 s per epoch
and ~240 s per full-schedule run (20 epochs). The estimates below use those figures. N processes
sharing the GPU overlap their launches: each run is taken to be slowed by `SHARE` (a guess; the
jobs section measured 2.6-4.5x the trials per minute at --jobs 4, with trials no slower than alone).

Whatever is cut off at a call's end is lost (a trial in flight, a run, a step part), so each such
piece must fit a call with its margin (`Sizes.units`; tests/test_bench_gpu.py holds the GPU sizes to
it), and a search's re-screen and retrain, some 19 full-schedule runs, are spread over as many calls
as they take (`nas_kd.finalize`'s ``start_by``), planned on the runs already timed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.gpu_step import StepSizes
from nas_kd.config import Schedule, get_preset
from nas_kd.rescreen import most_runs

__all__ = ["Sizes", "JobsRun", "GPU", "SMOKE", "SHARE", "SEARCH_MODE", "waves"]

SHARE = 1.4  # a run's slowdown while N runs share one GPU (estimate)


def waves(runs: int, at_once: int, seconds: float) -> list[float]:
    """``runs`` runs, ``at_once`` at a time, ``seconds`` each: the waves a call must hold whole."""
    return [seconds] * -(-max(0, runs) // at_once)


@dataclass(frozen=True)
class JobsRun:
    """One search the jobs section times: ``jobs`` trial processes, a ``--gpu-step`` switch,
    ``brief``: its ``--brief`` changes (None: the section's `Sizes.jobs_brief`, the schedule its
    first rows were measured with; "": the preset's brief schedule as it is), and ``mode``: its
    distiller mode (None: `Sizes.jobs_mode`, the mode its first rows were measured in)."""

    jobs: int
    gpu_step: str | None = None
    brief: str | None = None
    mode: str | None = None

    def key(self) -> str:
        """Its kept row's file stem and its study's suffix ("4", "4-graph-1", "8-preset-brief-kd")."""
        key = str(self.jobs) + (f"-{_slug(self.gpu_step)}" if self.gpu_step else "")
        key = key if self.brief is None else key + ("-preset-brief" if self.brief == "" else f"-brief-{_slug(self.brief)}")
        return key if self.mode is None else f"{key}-{self.mode}"

    @classmethod
    def of_row(cls, row: dict) -> JobsRun:
        """The run a kept row measured (rows kept before runs had a brief or mode of their own lack it)."""
        return cls(row["jobs"], row.get("gpu_step"), row.get("brief"), row.get("mode"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Sizes:
    smoke: bool
    dataset: str
    preset: str
    teacher: str  # the registry teacher every later section distils from (measured first)
    teacher_reconstruction: bool  # trained with Zhang et al.'s decoder: every mode (zhang too) works, and it can ship
    distil_from_shipped: bool  # later sections distil from the shipped teacher (same recipe), not the teachers section's file
    teacher_archs: tuple[str, ...]  # the teachers section measures these
    teacher_schedule: Schedule | None  # None: the preset's
    teacher_targets: tuple[tuple[str, float, float], ...]  # (arch, min test accuracy %, max train seconds)
    # The larger teacher again (arch, recipe) with the epochs its time goal holds and today's
    # decoder, in a section of its own (teacher-large).
    large_teacher: tuple[str, Schedule]
    loader: tuple[str, int, int, int]  # arch, batch, steps, DataLoader workers
    step: StepSizes
    step_schedule: Schedule | None  # the step section's schedule; None: the preset's brief one
    steptime_modes: tuple[str, ...]
    steptime_reps: int
    jobs: tuple[str, int, tuple[int, ...]]  # budget, trials, the --jobs values compared
    brief_trial_s: float  # one whole (unpruned) brief trial of the jobs budget, alone on the device
    process_start_s: float  # a search's start before its first trial (processes, teacher, data)
    space: str  # relative to the repository root
    budgets: tuple[str, ...]
    samplers: tuple[str, ...]  # the first trains the baselines, the others share them
    trials: int
    retrain_seeds: int
    mode: str
    search_jobs: int | None  # None: the device's default (nas_kd.jobs.default_jobs)
    processes: int  # what search_jobs amounts to on the machine, for the estimates
    search_trials_s: float  # estimated seconds of one search's trials
    full_run_s: float  # estimated seconds of one full-schedule retrain, alone on the device
    ablation_modes: tuple[str, ...]
    ablation_seeds: tuple[int, ...]
    ablation_schedule: Schedule | None  # None: the preset's full schedule
    ablation_jobs: int  # runs trained at once (one process each)
    ablation_run_s: float  # estimated seconds of one ablation run while others share the device
    margin_s: float  # left at the end of a call for the trials in flight and the pack
    estimate_pairs: tuple[tuple[str, float], ...]
    # Searches beside the plain --jobs values: other --jobs counts, a step switch on (its worth
    # measured on real trials, not only on one step), another brief schedule.
    jobs_variants: tuple[JobsRun, ...] = ()
    # `--brief` changes for the jobs section's plain searches (None: the preset's brief schedule):
    # its rows are kept across sessions and compared with each other, so they keep the schedule the
    # first rows were measured with when the preset changes.
    jobs_brief: str | None = None
    # The jobs section's distiller mode where a run names none: its first rows' (kept across
    # sessions), not `mode`, which follows the preset's default.
    jobs_mode: str = "full"

    def jobs_runs(self) -> list[JobsRun]:
        """Every search the jobs section times, in order: the plain --jobs values, then the variants."""
        return [JobsRun(n) for n in self.jobs[2]] + list(self.jobs_variants)

    def jobs_brief_of(self, run: JobsRun) -> str | None:
        """The ``--brief`` changes ``run``'s search trains with (None: none)."""
        return (self.jobs_brief if run.brief is None else run.brief) or None

    def jobs_mode_of(self, run: JobsRun) -> str:
        """The distiller mode ``run``'s search trains in."""
        return run.mode or self.jobs_mode

    @property
    def estimates(self) -> dict[str, float]:
        return dict(self.estimate_pairs)

    def search_estimate(self, with_baselines: bool) -> float:
        return self.search_trials_s + self.retrain_estimate(with_baselines)

    def retrain_estimate(self, with_baselines: bool) -> float:
        """The re-screen and the final retrain: the winner's seeds, and with baselines the uniform
        student's in the mode and in ce, `processes` runs at a time (nas_kd.finalize)."""
        return sum(waves(self.finish_runs(with_baselines), self.processes, self.finish_run_estimate()))

    def units(self) -> list[tuple[str, float]]:
        """What a call must hold whole, by estimate: a section that is not resumable, a part of one
        that is, a trial, a finish run, an ablation run (one cut off at the call's end is lost).
        Each must fit a call with its margin, or its section can never finish."""
        out = [(name, sec) for name, sec in self.estimate_pairs if name != "ablation"]
        out += [(f"step {part}", sec) for part, sec in self.step.part_seconds]
        out += [(f"jobs {r.key()}", self.jobs_estimate(r.jobs)) for r in self.jobs_runs()]
        return out + [("search trial", self.brief_trial_s * SHARE), ("finish run", self.finish_run_estimate()), ("ablation run", self.ablation_run_s)]

    def ablation_runs(self) -> int:
        """Modes x students (two: near 0.5M and 2M MACs) x seeds."""
        return len(self.ablation_modes) * 2 * len(self.ablation_seeds)

    def finish_runs(self, with_baselines: bool) -> int:
        """Full-schedule runs after a search's trials: the re-screen's, then the retrain's."""
        return self.retrain_seeds * (3 if with_baselines else 1) + most_runs(get_preset(self.preset).rescreen)

    def finish_run_estimate(self) -> float:
        """One of them, `processes` at a time, until a call has measured one (bench.gpu_sections.finish_run_seconds)."""
        return self.full_run_s * (SHARE if self.processes > 1 else 1.0)

    def jobs_estimate(self, count: int) -> float:
        """The jobs section's search at ``--jobs count``: its trials in waves of ``count``."""
        waves = -(-self.jobs[1] // count)
        return self.process_start_s + waves * self.brief_trial_s * (SHARE if count > 1 else 1.0)

    def teacher_recipe(self) -> Schedule:
        return self.teacher_schedule or get_preset(self.preset).teacher

    def teacher_file(self) -> str:
        """The teacher file later sections (and later calls) distil from: the one to carry, and on
        a GPU the one to ship (the other teachers are measured once, not reused)."""
        from nas_kd.models.teachers import teacher_key

        return f"{teacher_key(self.dataset, self.teacher, self.teacher_recipe(), 0, self.teacher_reconstruction)}.pt"


# The standard preset's default mode: the searches' and the jobs section's rows of the search as
# it trains now (a row in another mode is kept under another key and never chosen for them).
SEARCH_MODE = get_preset("standard").mode

GPU = Sizes(
    smoke=False,
    dataset="fashion-mnist",
    preset="standard",
    teacher="resnet20",
    teacher_reconstruction=True,
    # The shipped teacher is SHIP_COMMAND's resnet20: distilling from it keeps every section
    # independent of the teachers section, so a GPU session can start at any section.
    distil_from_shipped=True,
    teacher_archs=("resnet20", "wrn-16-4"),
    teacher_schedule=None,
    teacher_targets=(("resnet20", 93.5, 120.0), ("wrn-16-4", 94.5, 120.0)),
    loader=("resnet20", 256, 50, 8),
    # breakdown: 70 s measured (2026-12-04 probe); graph: the captured step in bf16 and in float32,
    # each warm-ups, capture and timing; switches: 7 variants and 2 thread counts at ~8 s; batch: the teacher cache once (~5 s)
    # and per batch size a new step eager and graphed, 100 steps each (~12 s; until session 18 it trained 10 brief runs,
    # ~220 s: accuracy is now the CPU's standard-brief-cpu section), then the 2M goal student in full and kd at three
    # batches, eager and graphed (12 more steps, ~6 s each: ~75 s; 512 since session 25: the 0.48M student's 20-epoch
    # retrain held its accuracy there on the CPU, section standard-full-cpu-batch; the 2M student's ended 0.26-0.47 points lower,
    # standard-full-cpu-large-batch, so 512 is a timing, not the preset); compile: cold inductor compiles, never measured here.
    step=StepSizes(reps=30, warmup=10, batch_sizes=(256, 512, 1024), compile_backend="inductor", cuda_graphs=True,
                   part_seconds=(("breakdown", 80.0), ("graph", 45.0), ("switches", 72.0), ("batch", 120.0), ("compile", 150.0)),
                   goal_batch_sizes=(256, 512, 1024)),
    step_schedule=None,
    steptime_modes=("ce", "kd", "ktan", "ksanc", "xu", "zhang", "full"),
    steptime_reps=30,
    # The criterion's pair (measured 2026-12-04, with the brief's random crops then: `jobs_brief`).
    # 8 trials: --jobs 1 alone is ~5 minutes of a call.
    jobs=("2M", 8, (1, 4)),
    brief_trial_s=36.0,  # measured 2026-12-04 (H200): 6 whole 2M trials in mode full, 29.5-41.8 s
    process_start_s=20.0,
    space="search_spaces/mbv2.yaml",
    budgets=("2M", "0.5M"),  # issue 12's budgets, the standard search's (make search) first
    samplers=("tpe", "random"),
    trials=100,
    retrain_seeds=5,  # paired claims on a GPU rest on 5 seeds
    mode=SEARCH_MODE,
    search_jobs=None,
    processes=4,
    # The next two were measured in mode full, before the preset's default became kd (session 39),
    # whose GPU step took 0.44x full's (gpu-steptime, 2M student): high, so a call ends a piece early
    # rather than losing one; the jobs section's kd rows replace them (bench.gpu_choice).
    # The pruner then stopped runs after epoch 1; since 2026-12-07 the standard one starts after
    # epoch 2 (77-85% of the unpruned compute on the CPU records, not 44-59%): still high for kd.
    search_trials_s=650.0,  # 100 trials x 23 s (measured, pruner on, one process) / 3.5
    full_run_s=240.0,  # 20 epochs x 12 s (the measured brief epoch, with crops: the full schedule has had none since session 19, so likely high)
    ablation_modes=("ce", "kd", "full", "zhang", "xu", "ktan", "ksanc"),  # the criterion's modes first: a cut-short call keeps them
    ablation_seeds=(0, 1, 2, 3, 4),
    ablation_schedule=None,
    ablation_jobs=8,
    # full_run_s x SHARE x 1.2: eight processes fill the device (each kept it 12% busy alone, session 15) where four
    # did not slow each other (gpu-jobs). Until session 28 it was 670 s (x 8/4), more than a call holds: no run could
    # ever start. The runner plans on the runs it has timed (kept with them, ablation/timing.json) once it has one.
    ablation_run_s=400.0,
    margin_s=45.0,
    # teachers, steptime, loader: measured 2026-12-04 (128, 74 and 12 s); step: its parts' sum.
    # ablation: 70 full runs x 400 s / 8, at one wave of 8 per call (a second does not fit: 2 x 400 > 540 - 45).
    # teacher-large: 36 epochs at the 2.65 s an epoch of wrn-16-4 took (53 s for 20, 2026-12-04) and its start.
    estimate_pairs=(("teachers", 130.0), ("loader", 15.0), ("steptime", 75.0), ("teacher-large", 110.0), ("ablation", 3600.0)),
    # Then the search as it trains now: the preset's mode (kd since session 39; the rows above
    # keep `jobs_mode`, full) and its crop-free brief, the teacher's outputs filled
    # once by the parent and opened by each process (a child's start no longer fits the teacher's
    # attention, ~45 s of the first --jobs 1 trial with crops): at --jobs 4, then with the whole
    # step in a CUDA graph per trial (nas_kd.distill.graphed: is it the GPU default to be?), then
    # at --jobs 8 (at --jobs 4 a trial trained no slower than alone, 33.8 s against 36-48 s, so
    # four processes did not fill the device).
    # Then --jobs 8 with the graph: a graphed step leaves the host little to do, so the device may
    # be what eight processes wait on, where four did not fill it eagerly. The searches and the
    # ablation train at the fastest of these rows that kept its accuracy (bench.gpu_choice).
    # Last, --jobs 8 through an MPS server (nas_kd.mps): without one the device runs one process's
    # kernels at a time, each a few of its multiprocessors' worth for a tiny student.
    jobs_variants=tuple(JobsRun(n, step, brief="", mode=SEARCH_MODE) for n, step in ((4, None), (4, "graph=1"), (8, None), (8, "graph=1"), (8, "mps=1"))),
    # The --jobs 1 and 4 rows (sessions 15-16) ran the standard brief schedule with random crops
    # (the teacher live in every step); the preset's brief has had none since session 18.
    jobs_brief="crop=1",
    # wrn-16-4 trained the shared 20-epoch recipe in 53 s (2026-12-04) and missed 94.5% (93.30%,
    # with the reconstruction decoder's version 2, whose widths made it unstable: version 3 since
    # session 21). Its 2 minutes hold about 40 epochs; 36 leave room for the start and a slower card.
    large_teacher=("wrn-16-4", get_preset("standard").teacher.replace(epochs=36)),
)

SMOKE = Sizes(
    smoke=True,
    dataset="synthetic",
    preset="quick",
    teacher="resnet8",
    teacher_reconstruction=True,
    distil_from_shipped=False,  # synthetic data ships no teacher: the smoke run trains its resnet8
    teacher_archs=("resnet8",),
    teacher_schedule=Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=512),
    teacher_targets=(),
    loader=("resnet8", 64, 3, 1),
    step=StepSizes(reps=2, warmup=1, batch_sizes=(32, 64), compile_backend="eager", cuda_graphs=False,
                   part_seconds=(("breakdown", 5.0), ("graph", 0.0), ("switches", 3.0), ("batch", 6.0), ("compile", 3.0)),
                   goal_batch_sizes=(32,)),
    step_schedule=Schedule(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0.0, train_subset=256, crop=False),
    steptime_modes=("kd", "full"),
    steptime_reps=2,
    jobs=("130k", 2, (1, 2)),
    brief_trial_s=3.0,
    process_start_s=3.0,
    space="search_spaces/tiny.yaml",
    budgets=("130k",),
    samplers=("tpe", "random"),
    trials=2,
    retrain_seeds=1,
    mode="kd",
    search_jobs=1,
    processes=1,
    search_trials_s=10.0,
    full_run_s=3.0,
    ablation_modes=("kd", "zhang"),
    ablation_seeds=(0,),
    ablation_schedule=Schedule(epochs=1, batch_size=64, lr=0.1, warmup_epochs=0.0, train_subset=256, crop=False),  # as the standard full schedule: teacher outputs shared
    ablation_jobs=2,
    ablation_run_s=4.0,
    margin_s=1.0,
    estimate_pairs=(("teachers", 5.0), ("loader", 5.0), ("steptime", 5.0), ("teacher-large", 5.0), ("ablation", 15.0)),
    # A CPU ignores the switch (the code path runs); the plain rows with crops, as the GPU's kept ones.
    # (mps=1: its search in a process of its own, as on a GPU; a CPU starts no server and says so.)
    jobs_variants=(JobsRun(2, "graph=1", brief=""), JobsRun(2, "mps=1", brief="")),
    jobs_brief="crop=1",
    jobs_mode="kd",
    large_teacher=("resnet8", Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=256)),
)

