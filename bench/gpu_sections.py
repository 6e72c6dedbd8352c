"""The sections of `bench.gpu`: each measures through an existing bench script's functions, returns
JSON-ready data with its markdown body, and reads the sizes from ``cfg.sizes`` (GPU or smoke).

On the GPU every section after ``teachers`` distils from the shipped teacher (nas_kd/shipped: the
resnet20 that ``teachers`` trains again, same recipe), so any section can run first in a GPU
session and none waits for another. The smoke run (synthetic data: nothing ships) trains its
tiny teacher once (``sizes.teacher`` with ``sizes.teacher_recipe()``) and finds it again by its
cache key.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import multiprocessing
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from bench import distill_ablation, loader_speed, search_gpu
from bench import teachers as teacher_bench
from bench.gpu_choice import DEFAULT, Setup, against_plain, choose, rows_in
from bench.gpu_sizes import JobsRun
from bench.gpu_step import EPOCH_GOAL_S, measure_step, step_markdown
from nas_kd.config import format_count, get_preset, override_schedule
from nas_kd.data import load_splits
from nas_kd.distill import get_mode
from nas_kd.jobs import GPU_JOBS
from nas_kd.models.shipped import DEFAULT_SPEC
from nas_kd.models.teachers import ensure_teacher, load_teacher, resolve_teacher
from nas_kd.space import SearchSpace
from nas_kd.study import write_json

ROOT = Path(__file__).resolve().parent.parent
SMOKE_NOTE = "**Smoke run** (`make bench-gpu SMOKE=1`): every code path of this section in miniature on a CPU with synthetic data; the figures mean nothing."


# ----------------------------------------------------------------------------------- helpers


def _record(cfg, name: str) -> dict:
    from bench.gpu import result_path

    return json.loads(result_path(cfg, name).read_text())


def _header(cfg, title: str, record: dict) -> list[str]:
    lines = [f"## {title}{' (smoke)' if record['smoke'] else ''}", ""]
    lines += [f"Command: `make bench-gpu SECTION={record['section']}` (`{record['command']}`), {record['seconds']:.0f} s (estimated {record['estimate_seconds']:.0f} s)  "]
    lines += [f"Hardware: {record['hardware']}  ", f"Date: {record['date']}", ""]
    return lines + ([SMOKE_NOTE, ""] if record["smoke"] else [])


TITLES = {
    "teachers": "GPU: teachers",
    "teacher-large": "GPU: the larger teacher, with a recipe of its own",
    "loader": "GPU: device-resident loader vs DataLoader",
    "step": "GPU: where a tiny student's step goes, and what each switch is worth",
    "steptime": "GPU: distiller step time per mode",
    "jobs": "GPU: --jobs N trial processes on one device",
    "ablation": "GPU: distiller ablation",
}


def own_markdown(name: str) -> Callable:
    """The renderer of a section whose JSON holds its own markdown body."""

    def render(cfg) -> tuple[str, str]:
        record = _record(cfg, name)
        return f"gpu-{name}", "\n".join(_header(cfg, TITLES[name], record) + [record["result"]["markdown"]])

    return render


def _preset(cfg):
    return get_preset(cfg.sizes.preset)


def teacher(cfg):
    """(model, meta, path) of the teacher every later section distils from (module docstring)."""
    sz = cfg.sizes
    if sz.distil_from_shipped:
        return resolve_teacher(DEFAULT_SPEC, sz.dataset, sz.teacher_recipe(), preset=sz.preset, device=cfg.device, data_dir=cfg.data_dir, reconstruction=sz.teacher_reconstruction)
    return ensure_teacher(sz.dataset, sz.teacher, sz.teacher_recipe(), preset=sz.preset, seed=0, device=cfg.device, data_dir=cfg.data_dir, reconstruction=sz.teacher_reconstruction)


def _students(cfg, splits) -> dict:
    space = SearchSpace.load(ROOT / "search_spaces" / "mbv2.yaml")
    return distill_ablation.pick_students(space, splits.info.input_shape, splits.info.num_classes)


# ----------------------------------------------------------------------------------- sections


def teachers(cfg) -> dict:
    sz = cfg.sizes
    return _teachers(cfg, list(sz.teacher_archs), sz.teacher_recipe())


def large_teacher(cfg) -> dict:
    """The larger teacher again, with a recipe of its own (`Sizes.large_teacher`: the epochs its
    2 minutes hold, where the shared recipe gave it the resnet20's 20) and today's decoder."""
    arch, schedule = cfg.sizes.large_teacher
    return _teachers(cfg, [arch], schedule)


def _teachers(cfg, archs: list[str], schedule) -> dict:
    """``archs`` trained with ``schedule`` (seed 0), each judged on its target."""
    sz = cfg.sizes
    rows = teacher_bench.train_teachers(sz.dataset, archs, schedule, preset=sz.preset, seeds=[0], device=cfg.device, data_dir=cfg.data_dir, reconstruction=sz.teacher_reconstruction)
    targets = {arch: (acc, secs) for arch, acc, secs in sz.teacher_targets}
    lines = [teacher_bench.recipe(schedule, "0"), "", *teacher_bench.teacher_table(rows), ""]
    for r in rows:
        if r["arch"] in targets:
            acc, secs = targets[r["arch"]]
            r["target"] = {"min_test_accuracy": acc, "max_train_seconds": secs, "met": teacher_target_met(r, acc, secs)}
            lines.append(f"- {r['arch']}: target >= {acc}% in < {secs:.0f} s: **{'met' if r['target']['met'] else 'missed'}** ({r['test_accuracy'][0]:.2f}%, {r['train_seconds'][0]:.0f} s)")
    return {"rows": rows, "markdown": "\n".join(lines)}


def teacher_target_met(row: dict, min_accuracy: float, max_seconds: float) -> bool:
    """Issue 13's goal for a teacher (a row of `bench.teachers.train_teachers`, seed 0): at least
    ``min_accuracy`` % test accuracy, trained in at most ``max_seconds``. Both: a longer recipe
    that reaches the accuracy late misses it."""
    return row["test_accuracy"][0] >= min_accuracy and row["train_seconds"][0] <= max_seconds


def loader(cfg) -> dict:
    arch, batch, steps, workers = cfg.sizes.loader
    rows = loader_speed.measure(load_splits(cfg.sizes.dataset, cfg.data_dir), arch=arch, batch_size=batch, steps=steps, workers=workers, device=cfg.device)
    intro = f"{arch} on {cfg.sizes.dataset}, batch {batch}, {steps} timed steps, the same augmentation (crop with padding, flip, normalise); seed 0."
    return {"rows": rows, "markdown": "\n".join([intro, "", *loader_speed.loader_table(rows)])}


STEP_DIR = "step"  # in the work folder: each finished part of the step section, kept in the state archive


def step(cfg) -> dict | None:
    brief = cfg.sizes.step_schedule or _preset(cfg).brief
    splits = load_splits(cfg.sizes.dataset, cfg.data_dir, seed=0, train_subset=brief.train_subset)
    students, model = _students(cfg, splits), teacher(cfg)[0]
    (macs, student), (goal_macs, goal_student) = students["small"], students["large"]
    goal = (f"{format_count(goal_macs)}-MAC", goal_student)  # issue 13's epoch goal is a 2M student's
    r = measure_step(splits, model, student, brief, cfg.device, cfg.sizes.step, left=lambda: cfg.left() - cfg.sizes.margin_s, kept=cfg.work / STEP_DIR, goal=goal, on_kept=cfg.checkpoint)
    if r is None:
        return None
    intro = f"Student `{student.describe()}` ({format_count(macs)} MACs; the batch table's goal student: `{goal_student.describe()}`, {format_count(goal_macs)} MACs), mode full, teacher {cfg.sizes.teacher}, batch {brief.batch_size} ({brief.epochs} epoch(s) on {brief.train_subset or 'all'} examples for the batch-size table); timings are the mean of {cfg.sizes.step.reps} back-to-back steps with one sync, median of 3 blocks."
    return {**r, "student": student.describe(), "markdown": "\n".join([intro, "", *step_markdown(r)])}


def steptime(cfg) -> dict:
    full = _preset(cfg).full
    splits = load_splits(cfg.sizes.dataset, cfg.data_dir, seed=0, train_subset=full.train_subset)
    students = _students(cfg, splits)
    model = teacher(cfg)[0]
    # A reconstruction-trained teacher serves every mode; without one, zhang cannot be timed.
    modes = [m for m in cfg.sizes.steptime_modes if cfg.sizes.teacher_reconstruction or m != "zhang"]
    times = distill_ablation.step_times(students, {False: model, True: model}, splits, full, modes, cfg.sizes.steptime_reps, cfg.device)
    intro = f"Batch {full.batch_size}, median of {cfg.sizes.steptime_reps} interleaved steps per mode after 2 warm-up steps (synchronised wall time on a GPU). Target: full <= 1.6x kd. {distill_ablation.describe_students(students, cfg.sizes.dataset)}."
    steps = len(splits.train) // full.batch_size
    epochs = epoch_seconds(times, steps)
    note = (f"- Step time alone x {steps} steps (teacher outputs cached, no crop, a sync per step; the goal of an epoch under "
            f"{EPOCH_GOAL_S} s is judged on real trials in the jobs section): " + "; ".join(f"{name} {mode} {sec:.2f} s" for name, per in epochs.items() for mode, sec in per.items() if mode in ("kd", "full")))
    return {"seconds": times, "epoch_seconds": epochs, "markdown": "\n".join([intro, "", *distill_ablation.steptime_table(times), "", note])}


def epoch_seconds(times: dict[str, dict[str, float]], steps: int) -> dict[str, dict[str, float]]:
    """Seconds per epoch of `steps` steps, per student and mode, from the median step times."""
    return {name: {mode: t * steps for mode, t in per.items()} for name, per in times.items()}


def _search_options(cfg, budget: str, sampler: str, study: str, **more):
    sz = cfg.sizes
    fields = dict(space=str(ROOT / sz.space), dataset=sz.dataset, mode=sz.mode, trials=sz.trials, preset=sz.preset, seed=0, retrain_seeds=sz.retrain_seeds, baselines=sampler == sz.samplers[0], device=str(cfg.device))
    fields.update(more)
    return search_gpu.options(budget, sampler, study=study, teacher=str(teacher(cfg)[2]), data_dir=cfg.data_dir, progress=False, **fields)


JOBS_DIR = "jobs"  # in the work folder: each --jobs value's finished row, kept in the state archive


def jobs_study(key: str) -> str:
    """A jobs-section search's study (and its folder under the work folder's runs/)."""
    return f"gpu_jobs{key}"


def _study_trials(study: str) -> list:
    """A jobs-section study's trials (its SQLite file in the work folder's runs/)."""
    from nas_kd.study import load_study

    return load_study(study, f"sqlite:///{Path('runs') / study / 'study.db'}").get_trials(deepcopy=False)


def _trial_values(trials: list) -> dict[str, float]:
    """Each finished trial's validation accuracy by its student (`describe`): the rows of one
    sampler seed propose the same students, so a step switch's rows pair with the plain ones."""
    from optuna.trial import TrialState

    return {t.user_attrs["describe"]: t.value for t in trials if t.state == TrialState.COMPLETE and "describe" in t.user_attrs}


def _switch_pairs(rows: list[dict]) -> list[str]:
    """For each row with a step switch: its students' validation accuracy minus the same students'
    in a plain row (`bench.gpu_choice.against_plain`), mean and 95% t-interval."""
    lines = []
    for row in (r for r in rows if r.get("gpu_step") and r.get("val_accuracy")):
        paired = against_plain(row, rows)
        if paired is None:
            continue
        base, d = paired
        other = "" if base.get("brief") == row.get("brief") else " (another brief schedule: only where no plain row shares this one)"
        lines.append(f"- `--gpu-step {row['gpu_step']}` minus `--jobs {base['jobs']}`{other} on the same {d.n} students: validation accuracy {d.mean:+.2f} points [{d.low:+.2f}, {d.high:+.2f}] ({d.direction})")
    return lines


def _jobs_label(row: dict) -> str:
    return f"{row['jobs']}, `--gpu-step {row['gpu_step']}`" if row.get("gpu_step") else str(row["jobs"])


def _jobs_table(rows: list[dict]) -> list[str]:
    """One table of rows trained with the same brief schedule, speed-ups against its first row."""
    first = rows[0]
    lines = ["| --jobs | trials | wall s | trials / min | train s / trial | x first row | mean val acc (%) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per = "-" if r["mean_train_seconds"] is None else f"{r['mean_train_seconds']:.1f}"
        acc = f"{100 * statistics.mean(r['val_accuracy'].values()):.2f}" if r.get("val_accuracy") else "-"
        lines.append(f"| {_jobs_label(r)} | {r['trained']} | {r['wall_seconds']:.0f} | {r['trials_per_minute']:.1f} | {per} | {r['trials_per_minute'] / first['trials_per_minute']:.2f}x | {acc} |")
    return lines


def jobs(cfg) -> dict | None:
    """The same search (trials only, no pruning, no final retrain) with each --jobs value, from
    scratch. Each value is its own slice: its row is kept (`JOBS_DIR`) as it finishes, and a value
    starts only if its estimate fits in what is left of the call (else the next value is tried).
    The section returns None until every value is measured (the next call measures the rest); a
    value that fails does not stop the others, and the section then fails keeping what it
    measured. (The first GPU call ran 16 pruned trials at --jobs 1 past the device's limit and
    brought nothing back.)"""
    from optuna.trial import TrialState

    from nas_kd.device import configure_step, parse_step_options, step_options
    from nas_kd.search import run_search

    budget, trials, _ = cfg.sizes.jobs
    before = step_options()
    kept = cfg.work / JOBS_DIR
    kept.mkdir(parents=True, exist_ok=True)
    rows, missing, failed = [], [], []
    for run in cfg.sizes.jobs_runs():
        count, gpu_step, key = run.jobs, run.gpu_step, run.key()
        path = kept / f"{key}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            continue
        need = cfg.sizes.jobs_estimate(count)
        if cfg.left() < need:  # a later, shorter value may still fit
            print(f"bench-gpu: jobs: no time for --jobs {key} in this call (about {need:.0f} s; {cfg.left():.0f} s left): the next call measures it", flush=True)
            missing.append(key)
            continue
        study = jobs_study(key)
        shutil.rmtree(Path("runs") / study, ignore_errors=True)  # this section times a search from its start
        # No pruning: every --jobs value trains whole trials, so trials per minute compare like
        # with like (the pruner stops different shares of trials when they run side by side).
        # The timeout stops new trials before the call's end; a slice cut by it still counts.
        opts = _search_options(cfg, budget, "tpe", study, trials=trials, jobs=count, baselines=False, prune=False, timeout=max(1.0, cfg.left() - cfg.sizes.margin_s), gpu_step=gpu_step, brief=cfg.sizes.jobs_brief_of(run), mode=cfg.sizes.jobs_mode_of(run))
        switches = parse_step_options(gpu_step)
        t0 = time.perf_counter()
        try:
            if switches.mps:
                _search_in_own_process(opts)
            else:
                run_search(opts, finish=False)
        except Exception as exc:  # noqa: BLE001 - the other values still run; the section fails at the end
            failed.append(f"--jobs {key}: {type(exc).__name__}: {exc}")
            continue
        finally:
            configure_step(before)  # an in-process search sets its row's switches for the whole process
        wall = time.perf_counter() - t0
        study_trials = _study_trials(study)  # opts.storage is this default: the study's run folder
        done = [t for t in study_trials if t.state == TrialState.COMPLETE and t.user_attrs.get("train_seconds")]
        per_trial = statistics.mean(t.user_attrs["train_seconds"] for t in done) if done else None
        row = {"jobs": count, "gpu_step": gpu_step, "brief": run.brief, "mode": run.mode, "wall_seconds": wall, "trained": len(done), "trials_per_minute": 60 * len(done) / wall, "mean_train_seconds": per_trial}
        row["val_accuracy"] = _trial_values(study_trials)
        if switches.graph:  # how the graph went in each trial: captured, or why it fell back
            row["step_graph"] = sorted({t.user_attrs.get("step_graph", "not graphed (no CUDA)") for t in done})
        path.write_text(json.dumps(row) + "\n")
        cfg.checkpoint()
        rows.append(row)
    for row in rows:  # rows kept before the values were recorded: read them from their kept study
        kept_study = jobs_study(JobsRun.of_row(row).key())
        if "val_accuracy" not in row and (Path("runs") / kept_study / "study.db").is_file():
            row["val_accuracy"] = _trial_values(_study_trials(kept_study))
    if failed:  # recorded in failures.log by the runner; the values measured are kept
        raise RuntimeError("jobs: " + "; ".join(failed))
    if missing:
        return None
    sz, preset_brief = cfg.sizes, _preset(cfg).brief
    groups: dict = {}  # rows by the --brief changes and mode they trained with, in the order they were asked
    for r in rows:
        run = JobsRun.of_row(r)
        groups.setdefault((sz.jobs_brief_of(run), sz.jobs_mode_of(run)), []).append(r)
    lines = [f"{trials} trials of `nas-kd search --budget {budget} --jobs N --no-prune` ({sz.preset} preset, TPE, no final retrain), each from an empty study; the teacher is loaded, not trained. *train s / trial*: one trial's own training time, which sharing the device stretches."]
    for (brief, mode), group in groups.items():
        schedule = override_schedule(preset_brief, brief, "--brief")
        attention = get_mode(mode).weights.desc
        how = ("random crops, so the teacher runs live in every step" + (" and each process fits its own attention" if attention else "")) if schedule.crop else "crop-free, so the teacher's outputs are filled once by the parent and opened by each process"
        lines += ["", f"**Mode {mode}, brief schedule {'`--brief ' + brief + '`' if brief else 'of the preset'}** ({schedule.epochs} epochs, batch {schedule.batch_size}, {how}):", "", *_jobs_table(group)]
    lines.append("")
    lines += _switch_pairs(rows)
    lines += [f"- `--gpu-step {r['gpu_step']}`: the step's graph in its trials: {', '.join(r['step_graph'])}" for r in rows if r.get("step_graph")]
    goal_rows = next(iter(groups.values()))  # the criterion is judged on the first rows asked (kept since 2026-12-04)
    plain = [r for r in goal_rows if not r.get("gpu_step")]
    goal = next((r for r in plain if r["jobs"] == 4), None) or max(plain[1:], key=lambda r: r["jobs"], default=None)  # the smoke sizes stop at 2
    if goal is not None:
        ratio = goal["trials_per_minute"] / goal_rows[0]["trials_per_minute"]
        lines.append(f"- Goal: `--jobs 4` at least {JOBS_GOAL}x the trials per hour of `--jobs 1`: **{'met' if ratio >= JOBS_GOAL else 'missed'}** (--jobs {goal['jobs']}: {ratio:.2f}x)")
    for group in groups.values():
        if len(group) > 2:
            best = max(group, key=lambda r: r["trials_per_minute"])
            lines.append(f"- Most trials per hour with this brief schedule: `--jobs {_jobs_label(best)}` ({best['trials_per_minute'] / group[0]['trials_per_minute']:.2f}x `--jobs {_jobs_label(group[0])}`; the search's default on a GPU is `--jobs {GPU_JOBS}` with the default step)")
    lines.append(f"- The searches and the ablation of this bench train at {choose(rows, sz).why} (`bench/gpu_choice.py`)")
    alone = goal_rows[0]["mean_train_seconds"]
    goal_run = JobsRun.of_row(goal_rows[0])
    goal_mode = sz.jobs_mode_of(goal_run)
    brief = override_schedule(preset_brief, sz.jobs_brief_of(goal_run), "--brief")
    epoch = None if alone is None else alone / brief.epochs
    if epoch is not None:
        # Real trials of the search (the brief schedule's data and teacher), one process alone on the device.
        lines.append(f"- Goal: a {budget}-budget student's epoch with the teacher under {EPOCH_GOAL_S} s (mode {goal_mode}, --jobs {goal_rows[0]['jobs']}, optimisation time of a brief trial / {brief.epochs} epochs): **{'met' if epoch < EPOCH_GOAL_S else 'missed'}** ({epoch:.2f} s)")
    for (brief_changes, mode), group in list(groups.items())[1:]:  # the same figure as the search trains now (trials no slower at --jobs 4 than alone)
        schedule = override_schedule(preset_brief, brief_changes, "--brief")
        per = [f"{_jobs_label(r)}: {r['mean_train_seconds'] / schedule.epochs:.2f} s" for r in group if r.get("mean_train_seconds")]
        if per:
            lines.append(f"- The same epoch in mode {mode} with the brief schedule {'`--brief ' + brief_changes + '`' if brief_changes else 'of the preset'} (a trial's optimisation time / {schedule.epochs}, processes sharing the device): " + "; ".join(per))
    return {"rows": rows, "epoch_seconds": epoch, "markdown": "\n".join(lines)}


JOBS_GOAL = 2.5  # issue 13: trials per hour of --jobs 4 over --jobs 1


def _search_trials(opts) -> dict:
    from nas_kd.search import run_search

    return run_search(opts, finish=False)


def _search_in_own_process(opts) -> dict:
    """``run_search(opts, finish=False)`` in a spawned process, as `nas-kd search` runs: one that
    initialises CUDA itself. An MPS server (``--gpu-step mps=1``, nas_kd.mps) serves only processes
    whose CUDA starts after it, and this one started CUDA in earlier sections: in-process, the
    search's own trials would bypass the server. Its wall time includes the process's start (the
    import, the CUDA context: a few seconds) that the in-process rows do not pay."""
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_search_trials, opts).result()


def search_name(budget: str, sampler: str) -> str:
    return f"search-{budget}-{sampler}"


def search_study(sizes, budget: str, sampler: str) -> str:
    """A search section's study name, also its folder under the work folder's runs/."""
    return f"gpu_{sizes.dataset}_{budget}_{sampler}"


def start_over_if_changed(opts, log=print) -> bool:
    """Delete a kept study (from the state archive) that this version's search would refuse to
    resume (`nas_kd.study.check_settings`: e.g. a preset's brief schedule changed since its trials
    ran), so that the section starts it afresh instead of failing every call; True if it did."""
    from nas_kd.device import resolve_device
    from nas_kd.errors import UserError
    from nas_kd.plan import build_plan, plan_of
    from nas_kd.search import bind_teacher
    from nas_kd.study import check_settings, load_study

    folder = Path("runs") / opts.study
    if not (folder / "study.db").is_file():
        return False
    stored = load_study(opts.study, f"sqlite:///{folder / 'study.db'}")
    # Bound to its teacher as the search will be: a study keeps its teacher's SHA-256 and seed,
    # which an unbound plan lacks (it then differed from every kept study, restarted every call).
    wanted, _ = bind_teacher(build_plan(opts), resolve_device(opts.device), log=lambda _line: None)
    try:
        check_settings(plan_of(stored).settings(), wanted.settings(), opts.study)
    except UserError as e:
        log(f"bench-gpu: starting the kept study {opts.study} over ({len(stored.trials)} trials dropped): {e}")
        del stored
        shutil.rmtree(folder)
        return True
    return False


FINISH_FILE = "bench-finish.json"  # in a search's study folder (so in the state archive): its finish's seconds, summed over calls
RUN_MARGIN = 1.25  # a finish run's wall over its measured optimisation time (per-epoch validation, the test pass)
RUN_SETUP_S = 30.0  # and a worker's start (spawn, CUDA, data, teacher, its outputs opened)


def finish_run_seconds(study: str, sizes, setup: Setup = DEFAULT) -> float:
    """What one re-screen or retrain run of ``study`` takes, to plan a call on: from the runs it
    has finished (the re-screen's scores in the study, the retrain's kept runs, each with its
    optimisation time, measured while the others shared the device), else the estimate at
    ``setup`` (`bench.gpu_choice.Setup.full_run_s`)."""
    from nas_kd.finalize import FINAL_DIR, RUNS_DIR
    from nas_kd.rescreen import RESCREEN_ATTR
    from nas_kd.study import load_study

    folder = Path("runs") / study
    seconds = [float(e.get("seconds", 0.0)) for e in (load_study(study, f"sqlite:///{folder / 'study.db'}").user_attrs.get(RESCREEN_ATTR) or {}).values()]
    seconds += [float(torch.load(p, map_location="cpu", weights_only=True)["record"]["train_seconds"]) for p in (folder / FINAL_DIR / RUNS_DIR).glob("*.pt")]
    return RUN_MARGIN * max(seconds) + RUN_SETUP_S if seconds else setup.full_run_s(sizes)


def _finish_seconds(study: str, add: float) -> float:
    """The seconds a search's finish (re-screen, retrain) has taken over all calls, ``add`` added and kept."""
    path = Path("runs") / study / FINISH_FILE
    total = (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0) + add
    write_json(path, {"seconds": total})
    return total


def search(budget: str, sampler: str) -> Callable:
    """A search section: trials until the study has them or the call ends (resumed next call),
    then its finish, spread over as many calls as it takes: the re-screen's and the retrain's
    runs start only while one can end inside this call, and each finished run is kept
    (`nas_kd.finalize`'s ``start_by``); once all are done, the report and export."""

    def run(cfg) -> dict | None:
        from nas_kd.device import configure_step, step_options

        before = step_options()  # an in-process search sets its switches for the whole process
        try:
            return _search_section(cfg, budget, sampler)
        finally:
            configure_step(before)

    return run


def _search_section(cfg, budget: str, sampler: str) -> dict | None:
    """`search`'s section body: its result, or None when it must resume next call."""
    from nas_kd.device import parse_step_options
    from nas_kd.errors import UserError
    from nas_kd.finalize import Unfinished, finalize
    from nas_kd.search import run_search

    sz = cfg.sizes
    setup = searches_setup(cfg)
    opts = _search_options(cfg, budget, sampler, search_study(sz, budget, sampler), jobs=setup.search_jobs(sz), gpu_step=setup.gpu_step)
    print(f"bench-gpu: {search_name(budget, sampler)}: {setup.why}", flush=True)
    start_over_if_changed(opts)
    setups = _note_setup(opts.study, setup)
    t0 = time.perf_counter()
    # Trials start until one could no longer end inside this call.
    trials = dataclasses.replace(opts, timeout=max(10.0, cfg.left() - sz.margin_s - setup.trial_piece_s(sz)))
    first = _search_in_own_process(trials) if parse_step_options(setup.gpu_step).mps else run_search(trials, finish=False)
    if first["finished"] < sz.trials:
        return None
    run_s = finish_run_seconds(opts.study, sz, setup)
    t1 = time.perf_counter()
    try:
        finalize(opts.study, start_by=time.time() + cfg.left() - sz.margin_s - run_s)
    except UserError:
        pass  # nothing to finalize (no candidate within budget): run_one reports it as a search would
    except Unfinished as e:
        _finish_seconds(opts.study, time.perf_counter() - t1)
        print(f"bench-gpu: {search_name(budget, sampler)}: {e} (a run is planned at {run_s:.0f} s)", flush=True)
        return None
    finish = _finish_seconds(opts.study, time.perf_counter() - t1)
    report = search_gpu.run_one(opts)  # resumes: no trial or run left; the report and export
    finish += report["bench_seconds"]
    keep = ("winner", "baselines", "comparisons", "verdict", "trial_counts", "trials_by_state", "search_wall_seconds", "trial_seconds", "command", "budget", "trials")
    # The table's wall time: the whole search, its trials and its finish, each summed over the calls that ran them.
    whole = {"bench_seconds": report["search_wall_seconds"] + finish, "finish_seconds": finish}
    return {"budget": budget, "sampler": sampler, "this_call_seconds": time.perf_counter() - t0, "setups": setups, "report": {k: report.get(k) for k in keep} | whole}


def searches_setup(cfg) -> Setup:
    """The --jobs and --gpu-step the searches and the ablation train with: the fastest safe row
    the jobs section has kept so far (`bench.gpu_choice`), this call's included."""
    return choose(rows_in(cfg.work / JOBS_DIR), cfg.sizes)


SETUPS_FILE = "bench-setups.json"  # in a search's study folder (so in the state archive): the setups its calls trained with


def _note_setup(study: str, setup: Setup) -> list[dict]:
    """The setups ``study``'s calls have trained with, ``setup`` added if new (kept: a search spread
    over calls may change setup when the jobs section measures between them)."""
    path = Path("runs") / study / SETUPS_FILE
    seen = json.loads(path.read_text()) if path.is_file() else []
    if not seen or (seen[-1]["jobs"], seen[-1]["gpu_step"]) != (setup.jobs, setup.gpu_step):
        seen.append({"jobs": setup.jobs, "gpu_step": setup.gpu_step, "why": setup.why})
        write_json(path, seen)
    return seen


def search_markdown(cfg) -> tuple[str, str]:
    """One table for every search section done so far (random search shares the TPE run's baselines)."""
    from bench.gpu import result_path, sections

    records = [_record(cfg, s.name) for s in sections(cfg.sizes) if s.name.startswith("search-") and result_path(cfg, s.name).is_file()]
    results = [(r["result"]["budget"], r["result"]["sampler"], r["result"]["report"]) for r in records]
    # docs/results/search.json: per budget and sampler, the winner's and the baselines' per-seed
    # test accuracies, MACs and paired differences (issue 12), as the sections recorded them.
    rows = [{"budget": b, "sampler": smp, "trained_trials": (rep.get("trial_counts") or {}).get("trained"), **{k: rep.get(k) for k in ("winner", "baselines", "comparisons", "verdict")}} for b, smp, rep in results]
    write_json(cfg.results / "search.json", {"hardware": records[-1]["hardware"], "date": records[-1]["date"], "smoke": records[-1]["smoke"], "searches": rows})
    sz = cfg.sizes
    lines = _header(cfg, "GPU: searched student vs uniform baseline", {**records[-1], "section": ",".join(r["section"] for r in records), "seconds": sum(r["seconds"] for r in records), "estimate_seconds": sum(r["estimate_seconds"] for r in records)})
    lines += [f"{sz.trials} trained trials per search, {sz.preset} preset, mode {sz.mode}, {sz.retrain_seeds} retrain seeds, space {sz.space}; `--jobs` and `--gpu-step` the jobs section's fastest safe setup when each call started (`bench.gpu_choice`, below). *wall s*: the search's trials (all sessions). Test accuracy is mean ± std over the retrain seeds.", ""]
    lines.append(search_gpu.table(results))
    trained_at = {}
    for r in records:  # records made before the setups were chosen ran the defaults
        setups = r["result"].get("setups") or [{"jobs": None, "gpu_step": None, "why": "the defaults"}]
        trained_at[(r["result"]["budget"], r["result"]["sampler"])] = setups
        said = "; then ".join(f"`{_setup_flags(s)}` ({s['why']})" for s in setups)
        lines.append(f"- {r['result']['budget']} {r['result']['sampler']} trained at {said}")
    lines += [f"- {budget} {sampler}: {report['verdict']}" for budget, sampler, report in results if report.get("verdict")]
    standard = next((rep for b, smp, rep in results if (b, smp) == (sz.budgets[0], sz.samplers[0]) and rep.get("finish_seconds") is not None), None)
    if standard is not None:  # records made before 2026-12-05 lack the split
        whole, rest = standard["bench_seconds"], standard["finish_seconds"]
        # The command as the bench ran it: the setup chosen may differ from make search's defaults.
        flags = " then ".join(f"`{_setup_flags(s)}`" for s in trained_at[(sz.budgets[0], sz.samplers[0])])
        lines.append(
            f"- Goal: the standard search (`make search BUDGET={sz.budgets[0]}`: {sz.trials} trials, re-screen, {sz.retrain_seeds}-seed retrain, report, export) under {SEARCH_GOAL_S / 60:g} minutes: "
            f"**{'met' if whole < SEARCH_GOAL_S else 'missed'}** ({whole:.0f} s at {flags}: trials {whole - rest:.0f} s, summed over the calls that ran them, then {rest:.0f} s of re-screen, retrain, report and export, summed the same way)"
        )
    return "gpu-search", "\n".join(lines)


SEARCH_GOAL_S = 300.0  # issue 13: the whole standard search on one GPU


def _setup_flags(setup: dict) -> str:
    """A kept setup (`_note_setup`) as the search's flags ("default": the device's / the defaults)."""
    return f"--jobs {setup['jobs'] or 'default'} --gpu-step {setup['gpu_step'] or 'default'}"


# ----------------------------------------------------------------------------------- ablation

_worker_state: dict = {}


def _ablation_init(threads: int, device: str, gpu_step: str | None = None) -> None:
    from nas_kd.device import configure_step, parse_step_options, resolve_device

    torch.set_num_threads(threads)
    # The searches' setup (`searches_setup`) less MPS: no server runs for the pool.
    configure_step(dataclasses.replace(parse_step_options(gpu_step), mps=False))
    resolve_device(device)  # the step's switches (cuDNN autotuning, TF32) as every other trainer has them


def _ablation_run(job: dict) -> dict:
    """One (mode, student, seed) run in a pool process; data, teacher and the section's shared
    teacher outputs (``job["teacher_cache"]``, `_shared_teacher_outputs`) opened once per process.
    The record says where the run's teacher outputs came from: "opened" (the shared file),
    "filled" (its own pass: no file, or one this process could not use), "live" (random crops:
    the teacher runs in every step) or None (ce)."""
    from nas_kd.config import Schedule
    from nas_kd.distill.shared_cache import open_cache_for
    from nas_kd.models.student import StudentConfig

    schedule, device = Schedule(**job["schedule"]), torch.device(job["device"])
    key = (job["dataset"], job["data_dir"], job["train_subset"], job["teacher"], job["device"], job.get("teacher_cache"))
    if _worker_state.get("key") != key:
        splits = load_splits(job["dataset"], job["data_dir"], seed=0, train_subset=job["train_subset"])
        model, _ = load_teacher(job["teacher"], splits.info, job["device"])
        opened = None
        if job.get("teacher_cache"):
            opened, why = open_cache_for(Path(job["teacher_cache"]), model, splits, schedule, device, get_mode(job["teacher_cache_mode"]))
            if opened is None:
                print(f"bench-gpu: ablation: the shared teacher outputs are not usable in this worker ({why}); its runs fill their own", flush=True)
        _worker_state.update(key=key, splits=splits, teacher=model, cache=opened)
    mode, cache = get_mode(job["mode"]), _worker_state["cache"]
    use = cache if cache is not None and mode.uses_teacher and cache.covers(mode) else None
    r = distill_ablation.train_one(StudentConfig.from_json(job["config"]), _worker_state["teacher"], _worker_state["splits"], schedule, job["mode"], job["seed"], device, teacher_cache=use)
    origin = None if not mode.uses_teacher else "opened" if use is not None else "live" if schedule.crop else "filled"
    return {**r, "student": job["student"], "teacher_outputs": origin, "gpu_step": job.get("gpu_step")}


ABLATION_CACHE = Path("ablation-teacher") / "teacher-cache.pt"  # outside ablation/, whose files the state archive keeps
ABLATION_DIR = "ablation"  # in the work folder: each finished run, kept in the state archive
ABLATION_TIMING = "timing.json"  # in ablation/: each mode and student's longest run, kept with the runs


class AblationTiming:
    """How long an ablation run takes, to start only runs that end inside the call: per mode and
    student the longest timed so far (this call or an earlier one, kept in ``path``, the device
    shared as now), x `PLAN_MARGIN`; one not timed yet plans on the longest of all and the estimate
    (a `ce` run is a third of a `full` one: the first to finish must not set the others' plan)."""

    PLAN_MARGIN = 1.1

    def __init__(self, path: Path, estimate_s: float):
        self.path, self.estimate_s = path, estimate_s
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    @staticmethod
    def key(job: dict) -> str:
        return f"{job['mode']}/{job['student']}"

    def plan(self, job: dict) -> float:
        own = self.seconds.get(self.key(job))
        if own is not None:
            return self.PLAN_MARGIN * own
        return max(self.estimate_s, self.PLAN_MARGIN * max(self.seconds.values(), default=0.0))

    def took(self, job: dict, seconds: float) -> None:
        key = self.key(job)
        self.seconds[key] = max(seconds, self.seconds.get(key, 0.0))
        write_json(self.path, self.seconds)


@contextlib.contextmanager
def _shared_teacher_outputs(cfg, splits, schedule, teacher_path: Path, log=print) -> Iterator[tuple[Path | None, str | None]]:
    """(file, mode it was filled for) while the block runs, or (None, None): the teacher's outputs
    on the ablation's training data filled once here, for a mode that covers every ablated mode,
    and written for the pool's workers to open (`nas_kd.distill.shared_cache`), instead of one
    fill per distilling run (60 of the GPU's 70 runs; each fill a teacher pass per example and
    view, plus the attention fit for ksanc and full). The file goes when the block ends."""
    from bench._teacher_pass import TeacherPass
    from nas_kd.distill.shared_cache import shared_file

    modes = list(cfg.sizes.ablation_modes)
    if schedule.crop:  # random crops: every run's teacher runs live, nothing to fill
        yield None, None
        return
    t0 = time.perf_counter()
    model, _ = load_teacher(teacher_path, splits.info, cfg.device)
    cache = TeacherPass(model, splits, schedule.batch_size, cfg.device).covering(modes)
    if cache is None:
        yield None, None
        return
    # Opening checks that the file holds what the named mode reads; each run then checks its own.
    first = next(m for m in modes if get_mode(m).uses_teacher)
    try:
        with shared_file(cache, ABLATION_CACHE) as path:
            log(f"bench-gpu: ablation: the teacher's outputs filled once ({cache.nbytes / 2**20:.0f} MiB, {time.perf_counter() - t0:.1f} s), opened by every worker from {path}")
            # This process trains nothing: its device copy would sit beside each worker's own.
            del cache, model
            if cfg.device.type == "cuda":
                torch.cuda.empty_cache()
            yield path, first
    finally:
        with contextlib.suppress(OSError):
            ABLATION_CACHE.parent.rmdir()  # the file is gone (shared_file); its folder too


def ablation(cfg) -> dict | None:
    """Every mode x student x seed with the full schedule, ``ablation_jobs`` runs at once (one
    process each, like --jobs); each finished run is kept in ablation/, so a call that ends
    first loses nothing and the next call trains only the rest."""
    from nas_kd.jobs import threads_per_job

    sz = cfg.sizes
    setup = searches_setup(cfg)
    schedule = sz.ablation_schedule or _preset(cfg).full
    splits = load_splits(sz.dataset, cfg.data_dir, seed=0, train_subset=schedule.train_subset)
    students = _students(cfg, splits)
    path = str(teacher(cfg)[2].resolve())
    cache = Path(ABLATION_DIR)
    cache.mkdir(exist_ok=True)
    jobs = [
        {"mode": mode, "student": name, "seed": seed, "config": cfg_.to_json(), "schedule": schedule.to_dict(), "dataset": sz.dataset, "data_dir": cfg.data_dir, "train_subset": schedule.train_subset, "teacher": path, "device": str(cfg.device)}
        # seed-major: a call cut short leaves every mode on the same first seeds (paired)
        for seed in sz.ablation_seeds
        for name, (_, cfg_) in students.items()
        for mode in sz.ablation_modes
    ]

    def file(job) -> Path:
        return cache / f"{job['mode']}_{job['student']}_{job['seed']}.json"

    queue = [j for j in jobs if not file(j).is_file()]
    if queue:
        # spawn on a GPU (CUDA cannot run in a forked child); fork on a CPU, which skips
        # re-importing torch in every worker.
        ctx = multiprocessing.get_context("spawn" if cfg.device.type == "cuda" else "fork")
        # The shared teacher outputs' file outlives the pool (the stack exits after it).
        with contextlib.ExitStack() as stack, cf.ProcessPoolExecutor(max_workers=min(sz.ablation_jobs, len(queue)), mp_context=ctx, initializer=_ablation_init, initargs=(threads_per_job(sz.ablation_jobs), str(cfg.device), setup.gpu_step)) as pool:
            print(f"bench-gpu: ablation: the step of {setup.why}", flush=True)
            running: dict = {}  # future -> (job, when it started)
            timing = AblationTiming(cache / ABLATION_TIMING, setup.ablation_run_s(sz))
            shared: tuple | None = None  # filled before the first run starts: not at all in a call without time for one
            while queue or running:
                # A run starts only if it can end inside this call; the next call does the rest.
                while queue and len(running) < sz.ablation_jobs and cfg.left() - sz.margin_s >= timing.plan(queue[0]):
                    if shared is None:
                        shared = stack.enter_context(_shared_teacher_outputs(cfg, splits, schedule, Path(path)))
                        if cfg.left() - sz.margin_s < timing.plan(queue[0]):  # the fill took the time a run needed
                            break
                    job = {**queue.pop(0), "teacher_cache": str(shared[0]) if shared[0] else None, "teacher_cache_mode": shared[1], "gpu_step": setup.gpu_step}
                    fut = pool.submit(_ablation_run, job)
                    running[fut] = (job, time.monotonic())
                if not running:
                    if queue:  # say why, and whether any call could start it
                        from bench.gpu import CALL_SECONDS

                        plan, whole = timing.plan(queue[0]), CALL_SECONDS - sz.margin_s
                        never = f"; a whole call holds {whole:.0f} s: train fewer runs at once (Sizes.ablation_jobs) or make the step faster" if plan > whole else ""
                        print(f"bench-gpu: ablation: the next run ({queue[0]['mode']}, {queue[0]['student']}, seed {queue[0]['seed']}) is planned at {plan:.0f} s, {max(0.0, cfg.left() - sz.margin_s):.0f} s left{never}", flush=True)
                    break
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    job, t0 = running.pop(fut)
                    result = fut.result()
                    timing.took(job, time.monotonic() - t0)
                    file(job).write_text(json.dumps(result))
                    cfg.checkpoint()
        if queue:
            return None
    runs: dict[tuple[str, str], list[dict]] = {}
    for j in jobs:
        runs.setdefault((j["mode"], j["student"]), []).append(json.loads(file(j).read_text()))
    intro = f"{schedule.epochs} epochs on {schedule.train_subset or 'all'} training examples, batch {schedule.batch_size}, lr {schedule.lr}; seeds {', '.join(map(str, sz.ablation_seeds))}; teacher {sz.teacher}; {sz.ablation_jobs} runs at once on the device. {distill_ablation.describe_students(students, sz.dataset)}."
    flat = [{"mode": m, "student": s, **r} for (m, s), rs in runs.items() for r in rs]
    steps = sorted({r.get("gpu_step") or "default" for r in flat})
    intro += f" The step: `--gpu-step {'`, `'.join(steps)}` (the jobs section's fastest safe setup when each run started: `bench.gpu_choice`)."
    return {"runs": flat, "markdown": "\n".join([intro, "", *distill_ablation.ablation_table(runs, list(sz.ablation_modes), students), "", teacher_outputs_note(flat)])}


def teacher_outputs_note(runs: list[dict]) -> str:
    """Where the distilling runs' teacher outputs came from (`_ablation_run`'s record)."""
    distilling = [r for r in runs if r.get("teacher_outputs") or r.get("teacher_seconds", 0) > 0]
    by = {k: [r for r in distilling if r.get("teacher_outputs", "filled") == k] for k in ("opened", "filled", "live")}
    line = f"- Teacher outputs: {len(by['opened'])} of {len(distilling)} distilling runs opened the section's shared file (filled once per call)"
    if by["filled"]:
        line += f"; {len(by['filled'])} filled their own, {statistics.mean(r.get('teacher_seconds', 0.0) for r in by['filled']):.1f} s each on average"
    if by["live"]:
        line += f"; {len(by['live'])} ran the teacher live (random crops)"
    return line + "."
