"""Which brief schedule should the standard (GPU) preset train each candidate with? Variants of it
on real data, paired by seed, on the CPU.

The standard preset's brief run (3 epochs of all 54,000 training images, batch 256, lr 0.2) was
set by analogy and never measured until this bench. Two of its choices cost GPU time. Random crops
(its setting until session 18) keep the teacher live in every step of every trial, where a
crop-free run reads the teacher's outputs from a cache built once per process (session 15's probe
put the teacher at 2.8 ms of a 38-ms step). Its batch of 256 gives 633 steps per trial on a device
busy 12% of each (docs/BENCHMARKS.md, GPU runs): a larger batch would cost about the same per
step, so a trial's time would fall with its number of steps, if its accuracy held. What a brief run
must do is rank candidates; its validation accuracy is the proxy measured here (a variant that
loses points, or diverges on a seed, ranks worse), for the bench's ~0.5M-MAC mbv2 student in the
preset's mode. Accuracy is what a CPU measures as well as a GPU (the step's numerics aside: bf16
there), so the GPU's `step` section only times the larger batches.

    python -m bench.standard_brief                      # 4 variants x 3 seeds, ~25 min on 2 cores
    python -m bench.standard_brief --variants "crop=0;crop=1" --seeds 0,1,2,3,4
    python -m bench.standard_brief --schedule full --variants "crop=1;crop=0"   # the final retrain's, ~65 min

``--schedule full`` asks the same of the final retrain's 20-epoch schedule (winner and baselines;
section ``standard-full-cpu``): its random crops keep the teacher live in every step too.
``--schedule teacher`` asks it of the teacher's recipe (20 epochs, with crops): each run trains a
resnet20 teacher with the reconstruction head (``--arch`` another) through `ensure_teacher`, cached
under ``--teacher-root`` (a finished one is reused, so a run cut short resumes teacher by teacher);
the seed is the teacher's, which also draws its validation split (section ``standard-teacher-cpu``):

    python -m bench.standard_brief --schedule teacher --variants "crop=1;crop=0" --seeds 0,1,2   # ~30 min a run alone

``--variants``: `;`-separated `--brief` changes of the standard brief schedule (the first is the
reference every other variant is paired with; "" is the schedule as it is), plus ``mode=NAME`` and
``numerics=bf16`` (the run under the CPU's bfloat16 autocast: what the GPU's default numerics do to
accuracy, `nas_kd.device.emulate_gpu_bf16`). Runs are kept in
docs/results/standard_brief.json as they finish and not rerun (resumable; benches asking other
seeds or questions may run at once, each finished run merged into the file). They are keyed by schedule,
mode and numerics, not by code (a variant spelt two ways shares its runs): ``--fresh`` trains every run asked
for again, ``--fresh-before REV`` only those trained before commit REV (each run records the
revision it trained at; runs from before that was recorded count as older). ``--jobs`` runs train at
once, one torch thread each. Crop-free runs read the teacher's outputs from a file the parent
fills once per distinct content before any run starts (`_shared_caches`; ~3 minutes for the whole
split in mode full), as a search's ``--jobs`` workers do. Since session 37 such a run is the run
that fills its own, bit for bit (the fill no longer moves the run's random state); kept runs of a
mode with ``desc`` that filled their own before then drew their adapters and discriminators from
another point of the stream (docs/BENCHMARKS.md, "Cause found"): retrain them with
``--fresh-before`` before pairing them with new runs. Writes the ``standard-brief-cpu`` section of docs/BENCHMARKS.md (``--student large``:
``standard-brief-cpu-large``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nas_kd.config import get_preset, override_schedule
from nas_kd.distill.modes import KNOB_KEYS, get_mode, parse_loss_weights
from nas_kd.errors import UserError

__all__ = ["main", "variant_schedule", "table"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "standard_brief.json"
VARIANTS = "crop=0;crop=1;crop=0,batch_size=512,lr=0.2828;crop=0,batch_size=1024,lr=0.4"
PRESET = "standard"
# The mode runs train in unless ``--mode`` or a variant's ``mode=`` names another, and the one the
# sections without a mode suffix were measured in (the standard preset's default until
# 2026-12-05): fixed here, so a change of the preset's default renames no section.
BASE_MODE = "full"


SCHEDULES = ("brief", "full", "teacher")


NUMERICS = ("fp32", "bf16")


def mode_spec(text: str) -> str:
    """A mode as ``mode=`` names it, spelt one way: ``NAME`` or ``NAME+key=value+...`` (that mode
    with `nas_kd.distill.modes.parse_loss_weights` overrides, as `get_mode` reads it), the overrides
    sorted and their numbers in shortest form, so that two spellings of one variant share their runs
    and a variant with overrides never shares the plain mode's (until 2026-12-06 the overrides were
    dropped here: ``full+feat=0.3`` was keyed, and trained, as ``full``). Refused in one line if
    the mode or an override is unknown."""
    from nas_kd.distill.modes import parse_loss_weights

    base, *changes = text.strip().split("+")
    name = get_mode(base.strip()).name
    overrides = parse_loss_weights(",".join(changes))
    return "+".join([name, *(f"{k}={v:g}" for k, v in sorted(overrides.items()))])


def split_variant(variant: str) -> tuple[str | None, str]:
    """(the mode a ``variant`` names with ``mode=NAME`` or ``mode=NAME+key=value...``, spelt as
    `mode_spec` spells it, or None; its schedule changes). A ``numerics=`` token is neither
    (`variant_numerics`)."""
    mode, changes = None, []
    for token in (t.strip() for t in variant.split(",")):
        if token.startswith("mode="):
            mode = mode_spec(token.removeprefix("mode="))
        elif token and not token.startswith("numerics="):
            changes.append(token)
    return mode, ",".join(changes)


def variant_numerics(variant: str) -> str:
    """"bf16" where a variant asks for ``numerics=bf16``: its runs train under the CPU's bfloat16
    autocast, the numerics a GPU step has by default (`nas_kd.device.emulate_gpu_bf16`); else
    "fp32", the CPU's own."""
    asked = [t.strip().removeprefix("numerics=").strip() for t in variant.split(",") if t.strip().startswith("numerics=")]
    for value in asked:
        if value not in NUMERICS:
            raise UserError(f"--variants '{variant}': numerics={value} is not one of {', '.join(NUMERICS)}")
    return asked[-1] if asked else "fp32"


def variant_mode(variant: str, default: str) -> str:
    """The mode a variant trains in: its own ``mode=``, else ``default`` (``--mode``)."""
    return split_variant(variant)[0] or default


def variant_schedule(changes: str, schedule: str = "brief"):
    """The standard preset's ``schedule`` ("brief": a trial's; "full": the final retrain's) with
    ``changes`` (`--brief` syntax, plus an optional ``mode=NAME``, not a schedule field) applied."""
    return override_schedule(getattr(get_preset(PRESET), schedule), split_variant(changes)[1], "--variants")


def _train(variant: str, seed: int, student_name: str, mode: str, data_dir: str | None, schedule_name: str = "brief", arch: str = "resnet20", teacher_root: str = "runs/teachers", revision: str = "unknown", *, cache_file: str | None = None) -> dict:
    """One brief (or full) run (fresh process state; one torch thread): the trainer as a search calls
    it; for ``schedule_name`` "teacher", one teacher (`_train_teacher`). ``cache_file``: the
    teacher's outputs the parent filled once for this run's data and mode (`_shared_caches`),
    opened here as a search's ``--jobs`` worker opens its parent's; a file that does not fit is
    refused by its fingerprint and the run fills its own, as without one."""
    if schedule_name == "teacher":
        return _train_teacher(variant, seed, arch, data_dir, teacher_root) | {"revision": revision}
    import torch

    from bench.distill_ablation import SPACE, pick_students
    from nas_kd.data import load_splits
    from nas_kd.device import emulate_gpu_bf16
    from nas_kd.distill.trainer import train
    from nas_kd.models.student import build_student
    from nas_kd.space import SearchSpace
    from nas_kd.train import NonFiniteLossError, reset_finite_checks

    torch.set_num_threads(1)
    emulate_gpu_bf16(variant_numerics(variant) == "bf16")  # set for every run: pool processes are reused
    cpu = torch.device("cpu")
    schedule = variant_schedule(variant, schedule_name)
    splits = load_splits("fashion-mnist", data_dir, seed=0, train_subset=schedule.train_subset)
    macs, cfg = pick_students(SearchSpace.load(SPACE), splits.info.input_shape, splits.info.num_classes)[student_name]
    teacher = _shipped_teacher(data_dir)
    torch.manual_seed(seed)
    student = build_student(cfg, splits.info.channels, splits.info.num_classes)
    steps = max(1, len(splits.train) // schedule.batch_size) * schedule.epochs
    start = time.perf_counter()
    run = {"variant": variant, "seed": seed, "student": cfg.describe(), "macs": macs, "mode": mode, "schedule": schedule.to_dict(), "steps": steps, "revision": revision}
    shared = {}
    if cache_file is not None:
        # The loaders train() would build for this seed (the same call), handed to it with the cache
        # opened on their training loader, which is what the cache must match.
        from nas_kd.distill.shared_cache import open_cache
        from nas_kd.train import make_loaders

        loaders = make_loaders(splits, batch_size=schedule.batch_size, device=cpu, seed=seed, crop=schedule.crop)
        cache, why = open_cache(Path(cache_file), teacher, loaders[0], get_mode(mode))
        shared = {"loaders": loaders, "teacher_cache": cache} if cache is not None else {}
        run["shared_cache"] = why or "opened"
    try:
        m = train(student, teacher, splits, schedule, mode, device=cpu, seed=seed, **shared)
    except NonFiniteLossError as e:  # a diverged run is the variant's result on this seed
        reset_finite_checks()
        return run | {"diverged": str(e), "seconds": time.perf_counter() - start}
    history = [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"]} for h in m["history"]]
    return run | {"val_accuracy": m["val_accuracy"], "history": history, "train_seconds": m["train_seconds"], "teacher_seconds": m.get("teacher_seconds"), "seconds": time.perf_counter() - start}


def _shipped_teacher(data_dir: str | None):
    """The shipped resnet20 every run distils from, on the CPU as `train` sets a teacher up
    (`frozen_teacher`), so that a cache filled from it here is the one a run would fill itself (bit
    for bit, checked at full scale: every tensor of the 2M student's mode-full cache)."""
    import torch

    from nas_kd.distill.trainer import frozen_teacher
    from nas_kd.models.shipped import DEFAULT_SPEC
    from nas_kd.models.teachers import resolve_teacher

    cpu, preset = torch.device("cpu"), get_preset(PRESET)
    return frozen_teacher(resolve_teacher(DEFAULT_SPEC, "fashion-mnist", preset.teacher, preset=PRESET, device=cpu, data_dir=data_dir, reconstruction=True)[0], cpu)


def cache_identity(variant: str, args) -> tuple | None:
    """What a run's teacher cache holds, as far as it varies between runs (None: the run reads no
    cache, or fills one its own way): runs with equal identities read equal caches. The content
    depends on the training images (the subset), the views (crops off; flips are the dataset's)
    and what the mode reads (`nas_kd.distill.cache.cached_map_stages`, descriptors), not on the
    seed, the batch or the loss weights (the teacher attention is fitted with its own fixed seed).
    bf16 variants fill theirs under the CPU's bf16 autocast: not shared."""
    if args.schedule == "teacher" or variant_numerics(variant) != "fp32":
        return None
    schedule = variant_schedule(variant, args.schedule)
    mode = get_mode(variant_mode(variant, args.mode))
    if schedule.crop or not mode.uses_teacher:
        return None
    return (schedule.train_subset, mode.stages if mode.uses_teacher_maps else None, bool(mode.weights.desc))


def _fill_cache(variant: str, args, path: Path) -> None:
    """The teacher's outputs for ``variant``'s runs, filled here (every core: no run has started)
    and written to ``path`` (`nas_kd.distill.shared_cache.write_cache`)."""
    import torch

    from nas_kd.data import load_splits
    from nas_kd.distill.cache import TeacherCache
    from nas_kd.distill.shared_cache import write_cache
    from nas_kd.train import make_loaders

    cpu = torch.device("cpu")
    schedule = variant_schedule(variant, args.schedule)
    splits = load_splits("fashion-mnist", args.data_dir, seed=0, train_subset=schedule.train_subset)
    teacher = _shipped_teacher(args.data_dir)
    loader = make_loaders(splits, batch_size=schedule.batch_size, device=cpu, seed=0, crop=schedule.crop)[0]
    write_cache(TeacherCache(teacher, loader, variant_mode(variant, args.mode), num_classes=splits.info.num_classes), path)


def _shared_caches(todo: list[tuple[str, int]], args, folder: Path) -> dict[str, str]:
    """{variant: cache file} for the runs to train that read a teacher cache: one file per
    `cache_identity`, filled once here instead of once per run (a crop-free run of the standard
    preset spent ~280 s of its ~420 filling its own: 54,000 images, two views, one thread)."""
    files: dict[tuple, Path] = {}
    out = {}
    for variant in dict.fromkeys(v for v, _ in todo):
        identity = cache_identity(variant, args)
        if identity is None:
            continue
        if identity not in files:
            files[identity] = folder / f"teacher-cache-{len(files)}.pt"
            start = time.perf_counter()
            _fill_cache(variant, args, files[identity])
            print(f"standard_brief: the teacher's outputs for {variant_mode(variant, args.mode)} runs filled once in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        out[variant] = str(files[identity])
    return out


def _train_teacher(variant: str, seed: int, arch: str, data_dir: str | None, root: str) -> dict:
    """One teacher on the variant's recipe, as `nas-kd teacher --preset standard --reconstruction`
    trains it (reused from ``root`` when there): its validation accuracy, and the test accuracy its
    training read once at the end."""
    import torch

    from nas_kd.errors import NonFiniteLossError
    from nas_kd.models.teachers import ensure_teacher

    torch.set_num_threads(1)
    schedule = variant_schedule(variant, "teacher")
    start = time.perf_counter()
    run = {"variant": variant, "seed": seed, "student": arch, "macs": None, "mode": "teacher", "schedule": schedule.to_dict(), "steps": None}
    try:
        _, meta, path = ensure_teacher("fashion-mnist", arch, schedule, preset=PRESET, seed=seed, device=torch.device("cpu"), data_dir=data_dir, reconstruction=True, root=root, log=lambda *_: None)
    except NonFiniteLossError as e:  # a diverged teacher is the variant's result on this seed
        return run | {"diverged": str(e), "seconds": time.perf_counter() - start}
    return run | {"val_accuracy": meta["val_accuracy"], "test_accuracy": meta["test_accuracy"], "train_seconds": meta["train_seconds"], "file": path.name, "history": meta.get("history"), "seconds": time.perf_counter() - start}


def section_name(student: str, schedule: str = "brief", mode: str | None = None, modes_compared: bool = False, bf16: bool = False) -> str:
    """docs/BENCHMARKS.md's section for a student (for the teacher schedule: an arch), schedule and
    mode (the preset's unless named), or (``modes_compared``) variants in several modes, or
    (``bf16``) variants with the GPU's numerics: one each, so no run replaces another."""
    if schedule == "teacher":
        return "standard-teacher-cpu" + ("" if student == "resnet20" else f"-{student}")
    name = f"standard-{schedule}-cpu" + ("" if student == "small" else f"-{student}")
    if bf16:
        return f"{name}-bf16"
    if modes_compared:
        return f"{name}-modes"
    return name if mode in (None, BASE_MODE) else f"{name}-{mode}"


def _key(variant: str, seed: int, args) -> str:
    """A run's identity: the schedule itself (not its spelling, nor what the preset is today)."""
    who = f"teacher:{args.arch}" if args.schedule == "teacher" else f"{args.student}|{variant_mode(variant, args.mode)}"
    if variant_numerics(variant) == "bf16":
        who += "|bf16"  # fp32 runs keep the keys they had before numerics= existed
    return f"{who}|{json.dumps(variant_schedule(variant, args.schedule).to_dict(), sort_keys=True)}|{seed}"


def table(runs: list[dict], variants: list[str], schedule: str = "brief") -> list[str]:
    """Markdown rows, one per variant: steps, per-seed and mean validation accuracy, the paired
    difference from the first variant (95% t-interval), CPU train time."""
    from nas_kd.stats import paired_difference

    by = {v: {r["seed"]: r for r in runs if r["variant"] == v} for v in variants}
    ref = {s: 100 * r["val_accuracy"] for s, r in by[variants[0]].items() if "val_accuracy" in r}
    lines = [f"| {schedule} variant | steps / run | val accuracy (%) per seed | mean | minus the first [95% CI] | CPU train s |", "|---|---:|---|---:|---|---:|"]
    for v in variants:
        rs = by[v]
        if not rs:
            continue
        accs = {s: 100 * r["val_accuracy"] for s, r in rs.items() if "val_accuracy" in r}
        per_seed = ", ".join(f"{accs[s]:.2f}" if s in accs else "diverged" for s in sorted(rs))
        mean = f"{statistics.fmean(accs.values()):.2f}" if accs else "-"
        diff = "-"
        if v != variants[0] and set(accs) & set(ref):
            d = paired_difference(accs, ref)
            diff = f"{d.mean:+.2f}" + (f" [{d.low:+.2f}, {d.high:+.2f}]" if d.low is not None else "") + f" (n={d.n})"
        secs = [r["train_seconds"] for r in rs.values() if "train_seconds" in r]
        cpu_s = f"{statistics.fmean(secs):.0f}" if secs else "-"
        label = f"`{v}`" if v else "(as it is)"
        steps = next(iter(rs.values()))["steps"]
        lines.append(f"| {label} | {'-' if steps is None else steps} | {per_seed} | {mean} | {diff} | {cpu_s} |")
    return lines


def _varied(modes: list[str]) -> str:
    """What variants of one mode vary, for a title: 'temperature' when only that knob, else 'loss weights'."""
    keys = {k for m in modes for k in parse_loss_weights(",".join(m.split("+")[1:]))}
    return " and ".join(sorted(keys)) if keys and keys <= set(KNOB_KEYS) else "loss weights"


def render(record: dict, variants: list[str], argv: list[str], schedule: str = "brief") -> str:
    from bench._report import hardware

    runs = record["runs"].values()
    first = next(iter(runs))
    base = getattr(get_preset(PRESET), schedule)
    if schedule == "teacher":
        return _render_teacher(list(runs), variants, argv, base)
    what = "a trial's brief run" if schedule == "brief" else "the final retrain (winner and baselines)"
    modes = sorted({r["mode"] for r in runs})
    bases = sorted({m.split("+")[0] for m in modes})  # one base: the variants differ in its loss weights (`mode_spec`)
    bf16 = any(variant_numerics(v) == "bf16" for v in variants)
    title = (
        f"## Does the GPU's bf16 autocast change accuracy? (CPU, {first['macs'] / 1e6:.2f}M-MAC student, {schedule} schedule, mode {' and '.join(modes)})"
        if bf16
        else f"## Which {_varied(modes)} for mode {bases[0]}? (CPU, {first['macs'] / 1e6:.2f}M-MAC student, {schedule} schedule)"
        if len(modes) > 1 and len(bases) == 1
        else f"## Which mode for the standard preset? (CPU, {first['macs'] / 1e6:.2f}M-MAC student, {schedule} schedule)"
        if len(modes) > 1
        else f"## Which {schedule} schedule for the standard preset? (CPU, {first['macs'] / 1e6:.2f}M-MAC student, mode {first['mode']})"
    )
    numerics = (
        " Variants with `numerics=bf16` train under the CPU's bfloat16 autocast (`nas_kd.device.emulate_gpu_bf16`), the numerics a GPU step has by default"
        " (`--gpu-step bf16=1`: convolutions, linear layers and matmuls in bfloat16, losses in float32, the teacher's cached outputs computed the same way); the others in float32, as on a CPU."
        if bf16
        else ""
    )
    revisions = sorted({r.get("revision", "unrecorded") for r in runs})
    lines = [
        title,
        "",
        f"Command: `{' '.join(['python -m bench.standard_brief', *map(shlex.quote, argv)])}`  ",
        f"Hardware: {hardware()}; one torch thread per run  ",
        f"Date: {time.strftime('%Y-%m-%d')}; code revision{'s' if len(revisions) > 1 else ''} {', '.join(revisions)}",
        "",
        (f"Each variant trains in the mode it names (`nas-kd search --mode`, `mode=`) and with the standard preset's {schedule} schedule as changed by the rest of it (`--{schedule}`), {what} "
         if len(modes) > 1 else f"Each variant changes the standard preset's {schedule} schedule, {what} ")
        + f"({base.epochs} epochs of all training images, batch {base.batch_size}, lr {base.lr}, "
        f"warm-up {base.warmup_epochs} epochs, crops {'on' if base.crop else 'off'})" + ("" if len(modes) > 1 else f" as `nas-kd search --{schedule}` would") + f"; one {schedule} run per seed of `{first['student']}` "
        f"({first['macs'] / 1e6:.2f}M MACs, the mbv2 student of bench.distill_ablation nearest {'0.5M' if first['macs'] < 1e6 else '2M'}), mode {' or '.join(modes) + ' (as each variant names it)' if len(modes) > 1 else first['mode']}, Fashion-MNIST, the shipped resnet20 teacher; "
        "validation accuracy at the run's end (the 6,000 held-out training images; the test set is not read). Seeds pair the same initial student and data order across variants. "
        "Crop-free variants read the teacher from its cache; with crops the teacher runs live in every step." + numerics,
        "",
        *table(list(runs), variants, schedule),
    ]
    return "\n".join(lines)


def _render_teacher(runs: list[dict], variants: list[str], argv: list[str], base) -> str:
    from bench._report import hardware

    arch = runs[0]["student"]
    tests = []
    for v in variants:
        by_seed = {r["seed"]: r for r in runs if r["variant"] == v and "test_accuracy" in r}
        if by_seed:
            per_seed = ", ".join(f"{100 * by_seed[k]['test_accuracy']:.2f}" for k in sorted(by_seed))
            tests.append(f"- {f'`{v}`' if v else '(as it is)'}: test accuracy per seed {per_seed}, mean {statistics.fmean(100 * r['test_accuracy'] for r in by_seed.values()):.2f}%")
    lines = [
        f"## Which teacher recipe for the standard preset? (CPU, {arch} with the reconstruction head)",
        "",
        f"Command: `{' '.join(['python -m bench.standard_brief', *map(shlex.quote, argv)])}`  ",
        f"Hardware: {hardware()}; one torch thread per run unless noted  ",
        f"Date: {time.strftime('%Y-%m-%d')}",
        "",
        f"Each variant changes the standard preset's teacher recipe ({base.epochs} epochs of all training images, batch {base.batch_size}, lr {base.lr}, "
        f"warm-up {base.warmup_epochs} epochs, crops {'on' if base.crop else 'off'}) as `nas-kd teacher --preset standard --reconstruction` trains it; one {arch} per seed, "
        "Fashion-MNIST. The seed is the teacher's: its initial weights, data order and validation split (6,000 training images held out), the same across variants. "
        "Validation accuracy at the run's end decides; the test accuracy each training read once at its end is listed under the table.",
        "",
        *table(runs, variants, "teacher"),
        "",
        *tests,
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=VARIANTS, help="';'-separated --brief changes; the first is the reference")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--student", default="small", choices=("small", "large"))
    ap.add_argument("--mode", default=BASE_MODE, help=f"the mode of variants that name none (default {BASE_MODE})")
    ap.add_argument("--schedule", default="brief", choices=SCHEDULES, help="which of the preset's schedules the variants change (default brief)")
    ap.add_argument("--arch", default="resnet20", help="with --schedule teacher: the teacher's arch")
    ap.add_argument("--teacher-root", default="runs/teachers", help="with --schedule teacher: where the teachers are cached (and reused from)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (processes, one torch thread each)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--section", default=None, help="the docs/BENCHMARKS.md section to write (default: named by student, schedule and mode); another question about the same schedule keeps its own table")
    ap.add_argument("--kept-only", action="store_true", help="train nothing: the table from the runs kept (a variant stopped after some seeds shows those)")
    ap.add_argument("--no-write", action="store_true", help="keep new runs and the table out of docs/ (kept runs are still read)")
    ap.add_argument("--fresh", action="store_true", help="train the runs asked for again even where kept (the code changed since), replacing them")
    ap.add_argument("--fresh-before", metavar="REV", default=None, help="train again the kept runs trained before commit REV (or with no recorded revision), replacing them; keep the rest")
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    variants = [v.strip() for v in args.variants.split(";")]
    try:
        for v in variants:
            variant_schedule(v, args.schedule)
            variant_numerics(v)
            if args.schedule == "teacher" and variant_numerics(v) != "fp32":
                raise UserError(f"--variants '{v}': numerics= applies to a student's runs; drop it with --schedule teacher")
            if args.schedule == "teacher" and split_variant(v)[0] is not None:
                raise UserError(f"--variants '{v}': a teacher trains without a distillation mode; drop mode= with --schedule teacher")
        get_mode(args.mode)
        if args.section is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.section):
            raise UserError(f"--section '{args.section}': a section name is lower-case letters, digits and '-' (e.g. standard-full-cpu-batch)")
        seeds = [int(s) for s in args.seeds.split(",")]
        since = None
        if args.fresh_before is not None:
            from bench._report import resolve_commit

            since = resolve_commit(args.fresh_before)
            if since is None:
                raise UserError(f"--fresh-before '{args.fresh_before}' names no commit in this checkout; give a hash from `git log`")
    except (UserError, ValueError) as e:
        print(f"standard_brief: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}  # --no-write: kept runs still count
    from bench._report import code_revision, record_run, trained_since

    def stale(key: str) -> bool:
        return key not in record["runs"] or args.fresh or (since is not None and not trained_since(record["runs"][key].get("revision"), since))

    todo = [] if args.kept_only else [(v, s) for s in seeds for v in variants if stale(_key(v, s, args))]
    print(f"standard_brief: {len(todo)} runs to train ({len(variants) * len(seeds) - len(todo)} kept)", file=sys.stderr, flush=True)
    revision = code_revision()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="standard-brief-") as folder, cf.ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        caches = _shared_caches(todo, args, Path(folder))
        futures = {pool.submit(_train, v, s, args.student, variant_mode(v, args.mode), args.data_dir, args.schedule, args.arch, args.teacher_root, revision, cache_file=caches.get(v)): (v, s) for v, s in todo}
        for f in cf.as_completed(futures):
            r = f.result()
            record = record_run(RESULTS, _key(r["variant"], r["seed"], args), r, record, write=not args.no_write)  # merged with what other benches kept meanwhile
            acc = f"{100 * r['val_accuracy']:.2f}%" if "val_accuracy" in r else f"diverged ({r['diverged']})"
            print(f"standard_brief: {r['variant'] or '(as it is)'} seed {r['seed']}: {acc} in {r['seconds']:.0f} s", file=sys.stderr, flush=True)
    keys = {_key(v, s, args): v for v in variants for s in seeds}
    kept = {k: record["runs"][k] | {"variant": v} for k, v in keys.items() if k in record["runs"]}  # spelt as asked
    body = render({"runs": kept}, variants, argv, args.schedule)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        compared = len({variant_mode(v, args.mode) for v in variants}) > 1
        bf16 = any(variant_numerics(v) == "bf16" for v in variants)
        write_section(args.section or section_name(args.arch if args.schedule == "teacher" else args.student, args.schedule, args.mode, compared, bf16), body)


if __name__ == "__main__":
    main()
