"""How the searches and the ablation of `bench.gpu` train: the fastest setup the jobs section measured.

The jobs section times the search as it trains now (the preset's brief schedule, the searches'
mode) at several ``--jobs`` counts and ``--gpu-step`` switches (a CUDA graph per trial, an MPS
server). The sections after it, the 100-trial searches and the 70-run ablation, are most of the
bench's GPU time (some 11,000 of 12,400 s at the default step), so they train with the setup that
gave the most trials per minute, where it is safe: a switch only changes how the step runs, so its
trials must keep the plain trials' validation accuracy (not detectably lower on the same
students), and a graph must have captured every trial (a trial that fell back trained eagerly, so
its row measured something else). Until the jobs section has such rows, the product's defaults.

The same choice sets the plan's estimates for those sections (`Setup.trials_s` and the rest): the
measured trial time replaces the guess from the first GPU session's eager, cropped trials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.gpu_sizes import SHARE, JobsRun, Sizes
from nas_kd.config import get_preset
from nas_kd.device import parse_step_options

__all__ = ["Setup", "DEFAULT", "choose", "rows_in", "against_plain"]

CAPTURED = "captured"  # a graphed trial's ``step_graph`` when its step ran in the graph (nas_kd.distill.trainer)


@dataclass(frozen=True)
class Setup:
    """``--jobs`` (None: the device's default) and ``--gpu-step`` (None: the defaults) for the
    searches and the ablation; ``trial_s``: a whole brief trial's optimisation time measured at
    that setup (processes sharing the device), ``trials_per_minute`` its row's; None: not measured
    (the sizes' estimates stand). ``why``: one line for the log and the sections' text."""

    jobs: int | None
    gpu_step: str | None
    trial_s: float | None
    trials_per_minute: float | None
    why: str

    @property
    def measured(self) -> bool:
        return self.trials_per_minute is not None

    def processes(self, sizes: Sizes) -> int:
        return sizes.processes if self.jobs is None else self.jobs

    def search_jobs(self, sizes: Sizes) -> int | None:
        return sizes.search_jobs if self.jobs is None else self.jobs

    def trials_s(self, sizes: Sizes) -> float:
        """A search's trials, unpruned (the searches prune some: high)."""
        return sizes.search_trials_s if not self.measured else 60.0 * sizes.trials / self.trials_per_minute

    def trial_piece_s(self, sizes: Sizes) -> float:
        """One trial, which a call must hold whole."""
        return sizes.brief_trial_s * SHARE if not self.measured else _within_a_call(TRIAL_MARGIN * self.trial_s, sizes)

    def full_run_s(self, sizes: Sizes) -> float:
        """One re-screen or retrain run while the others share the device, until a call has timed
        one (bench.gpu_sections.finish_run_seconds): the measured brief epoch x the full schedule's
        epochs (both schedules train on every example), with the finish runs' margin and start."""
        if not self.measured:
            return sizes.finish_run_estimate()
        from bench.gpu_sections import RUN_MARGIN, RUN_SETUP_S

        preset = get_preset(sizes.preset)
        return _within_a_call(RUN_MARGIN * self.trial_s / preset.brief.epochs * preset.full.epochs + RUN_SETUP_S, sizes)

    def ablation_run_s(self, sizes: Sizes) -> float:
        """One ablation run, ``ablation_jobs`` at once, until the section has timed one: a full run,
        slowed by `SHARE` (as the sizes guess) where more processes share the device than the
        measured row had."""
        if not self.measured:
            return sizes.ablation_run_s
        return _within_a_call(self.full_run_s(sizes) * (SHARE if sizes.ablation_jobs > self.processes(sizes) else 1.0), sizes)


def _within_a_call(seconds: float, sizes: Sizes) -> float:
    """An estimate of a piece a call must hold whole, at most what a call holds: a run estimated
    longer would never start, so never be timed (session 28's planning bug); started, it is timed
    and kept if it ends within the device's limit, and the sections plan on its measured time."""
    from bench.gpu import CALL_SECONDS

    return min(seconds, CALL_SECONDS - sizes.margin_s)


DEFAULT = Setup(None, None, None, None, "the product's defaults (the jobs section has not yet timed the searches' own brief schedule and mode)")
TRIAL_MARGIN = 1.5  # a trial's wall over its measured optimisation time (validation, its process's share)


def rows_in(folder: Path) -> list[dict]:
    """The jobs section's kept rows (``jobs/<key>.json``) in ``folder``."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _searches_own(row: dict, sizes: Sizes) -> bool:
    """Whether the row timed the search as the search sections train it: the preset's brief, their mode."""
    run = JobsRun.of_row(row)
    return sizes.jobs_brief_of(run) is None and sizes.jobs_mode_of(run) == sizes.mode and row.get("mean_train_seconds") is not None  # None: no trial finished


def against_plain(row: dict, rows: list[dict]):
    """(the plain row, `nas_kd.stats.PairedDifference`): a switch row's students' validation
    accuracy minus the same students' in a plain row of ``rows`` of its mode (another mode trains
    other accuracies), preferably of its brief schedule and --jobs, of those the one sharing the
    most students; None where none shares two. A switch that only changes how the step runs
    (graphs, fused kernels) should show no detectable difference; seeds differ where the trial
    numbers do, so this is a check, not a fine claim."""
    from nas_kd.stats import paired_difference

    ours = row.get("val_accuracy") or {}
    plain = sorted((r for r in rows if not r.get("gpu_step") and r.get("val_accuracy") and r.get("mode") == row.get("mode")), key=lambda r: (r.get("brief") != row.get("brief"), r["jobs"] != row["jobs"]))
    base, common = max(((r, set(r["val_accuracy"]) & set(ours)) for r in plain), key=lambda rc: len(rc[1]), default=(None, set()))
    if len(common) < 2:
        return None
    return base, paired_difference({k: 100 * ours[k] for k in common}, {k: 100 * base["val_accuracy"][k] for k in common})


def _unsafe(row: dict, own: list[dict]) -> str | None:
    """Why a switch row's setup may not train the searches (None: it may); ``own``: the rows of
    its brief schedule and mode."""
    graphs = row.get("step_graph") or []
    if parse_step_options(row["gpu_step"]).graph and (not graphs or any(g != CAPTURED for g in graphs)):
        return f"its graph did not capture every trial ({'; '.join(graphs) or 'not recorded'})"
    paired = against_plain(row, own)
    if paired is None:
        return "no plain row shares two of its students, so its accuracy is unchecked"
    base, d = paired
    if d.direction == "worse":
        return f"its students' validation accuracy fell {d.mean:+.2f} points [{d.low:+.2f}, {d.high:+.2f}] against --jobs {base['jobs']}"
    return None


def choose(rows: list[dict], sizes: Sizes) -> Setup:
    """The setup with the most trials per minute among the safe rows that timed the searches' own
    schedule and mode (a tie keeps the plain step, then the fewer processes); `DEFAULT` without one."""
    own = [r for r in rows if _searches_own(r, sizes)]
    safe, refused = [], []
    for r in own:
        why = _unsafe(r, own) if r.get("gpu_step") else None
        (refused if why else safe).append((r, why))
    if not safe:
        return DEFAULT
    best, _ = max(safe, key=lambda rw: (rw[0]["trials_per_minute"], not rw[0].get("gpu_step"), -rw[0]["jobs"]))
    label = f"--jobs {best['jobs']}" + (f" --gpu-step {best['gpu_step']}" if best.get("gpu_step") else "")
    why = f"{label}: the most trials per minute the jobs section measured on the searches' brief schedule in mode {sizes.mode} ({best['trials_per_minute']:.1f}, of {len(own)} rows)"
    why += "".join(f"; not --gpu-step {r['gpu_step']} at --jobs {r['jobs']}: {w}" for r, w in refused)
    return Setup(best["jobs"], best.get("gpu_step") or None, best["mean_train_seconds"], best["trials_per_minute"], why)
