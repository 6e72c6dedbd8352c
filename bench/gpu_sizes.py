"""How big each `bench.gpu` section is: the H100 run (`GPU`) and its CPU miniature (`SMOKE`).

The estimates are H100 seconds the runner plans its 10-minute calls with. Until a GPU run has
recorded the real figures (each section's JSON has ``seconds``), they are guesses from the step
counts: e.g. a brief trial of the standard preset is 3 epochs x 211 steps of a launch-bound
student at ~5 ms, about 4 s, and 4 such trials share the GPU at roughly 2.5x the rate of one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.gpu_step import StepSizes
from nas_kd.config import Schedule, get_preset

__all__ = ["Sizes", "GPU", "SMOKE"]


@dataclass(frozen=True)
class Sizes:
    smoke: bool
    dataset: str
    preset: str
    teacher: str  # the registry teacher every later section distils from (measured first)
    teacher_archs: tuple[str, ...]  # the teachers section measures these
    teacher_schedule: Schedule | None  # None: the preset's
    teacher_targets: tuple[tuple[str, float, float], ...]  # (arch, min test accuracy %, max train seconds)
    loader: tuple[str, int, int, int]  # arch, batch, steps, DataLoader workers
    step: StepSizes
    step_schedule: Schedule | None  # the step section's schedule; None: the preset's brief one
    steptime_modes: tuple[str, ...]
    steptime_reps: int
    jobs: tuple[str, int, int]  # budget, trials, N for the --jobs 1 vs N comparison
    space: str  # relative to the repository root
    budgets: tuple[str, ...]
    samplers: tuple[str, ...]  # the first trains the baselines, the others share them
    trials: int
    retrain_seeds: int
    mode: str
    search_jobs: int | None  # None: the device's default (nas_kd.jobs.default_jobs)
    search_trials_s: float  # estimated seconds of one search's trials
    full_run_s: float  # estimated seconds of one full-schedule retrain
    ablation_modes: tuple[str, ...]
    ablation_seeds: tuple[int, ...]
    ablation_schedule: Schedule | None  # None: the preset's full schedule
    ablation_jobs: int  # runs trained at once (one process each)
    estimate_pairs: tuple[tuple[str, float], ...]

    @property
    def estimates(self) -> dict[str, float]:
        return dict(self.estimate_pairs)

    def search_estimate(self, with_baselines: bool) -> float:
        retrains = self.retrain_seeds * (3 if with_baselines else 1)  # winner, + baseline in the mode and in ce
        return self.search_trials_s + retrains * self.full_run_s

    def teacher_recipe(self) -> Schedule:
        return self.teacher_schedule or get_preset(self.preset).teacher

    def keep_teachers(self, cfg) -> set[str]:
        """Teacher files a later call needs (the others are measured once, not reused)."""
        from nas_kd.models.teachers import teacher_key

        return {f"{teacher_key(self.dataset, self.teacher, self.teacher_recipe(), 0, False)}.pt"}


GPU = Sizes(
    smoke=False,
    dataset="fashion-mnist",
    preset="standard",
    teacher="resnet20",
    teacher_archs=("resnet20", "wrn-16-4"),
    teacher_schedule=None,
    teacher_targets=(("resnet20", 93.5, 120.0), ("wrn-16-4", 94.5, 120.0)),
    loader=("resnet20", 256, 50, 8),
    step=StepSizes(reps=30, warmup=10, batch_sizes=(256, 512, 1024), batch_seeds=(0, 1), compile_backend="inductor", cuda_graphs=True),
    step_schedule=None,
    steptime_modes=("ce", "kd", "ktan", "ksanc", "xu", "full"),
    steptime_reps=30,
    jobs=("2M", 16, 4),
    space="search_spaces/mbv2.yaml",
    budgets=("0.5M", "3M"),
    samplers=("tpe", "random"),
    trials=100,
    retrain_seeds=3,
    mode="full",
    search_jobs=None,
    search_trials_s=160.0,
    full_run_s=25.0,
    ablation_modes=("ce", "kd", "ktan", "ksanc", "xu", "full"),  # zhang needs a second (reconstruction) teacher
    ablation_seeds=(0, 1, 2),
    ablation_schedule=None,
    ablation_jobs=4,
    estimate_pairs=(("teachers", 200.0), ("loader", 40.0), ("step", 150.0), ("steptime", 40.0), ("jobs", 110.0), ("ablation", 330.0)),
)

SMOKE = Sizes(
    smoke=True,
    dataset="synthetic",
    preset="quick",
    teacher="resnet8",
    teacher_archs=("resnet8",),
    teacher_schedule=Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=512),
    teacher_targets=(),
    loader=("resnet8", 64, 3, 1),
    step=StepSizes(reps=2, warmup=1, batch_sizes=(32, 64), batch_seeds=(0,), compile_backend="eager", cuda_graphs=False),
    step_schedule=Schedule(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0.0, train_subset=256, crop=False),
    steptime_modes=("kd", "full"),
    steptime_reps=2,
    jobs=("130k", 2, 2),
    space="search_spaces/tiny.yaml",
    budgets=("130k",),
    samplers=("tpe", "random"),
    trials=2,
    retrain_seeds=1,
    mode="kd",
    search_jobs=1,
    search_trials_s=10.0,
    full_run_s=3.0,
    ablation_modes=("kd", "full"),
    ablation_seeds=(0,),
    ablation_schedule=Schedule(epochs=1, batch_size=64, lr=0.1, warmup_epochs=0.0, train_subset=256),
    ablation_jobs=2,
    estimate_pairs=(("teachers", 5.0), ("loader", 5.0), ("step", 15.0), ("steptime", 5.0), ("jobs", 15.0), ("ablation", 15.0)),
)
