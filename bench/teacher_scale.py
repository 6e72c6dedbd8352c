"""Does distillation depend on the scale of the teacher's feature maps? It should not.

    python -m bench.teacher_scale [--modes full,ksanc,ktan,zhang] [--scales 1,0.1,10] [--seeds 0,1,2,3,4]
        [--preset quick|standard] [--baseline REV] [--jobs 2] [--no-write]

The shipped resnet20 teacher and copies of it whose every stage map is c times as large, with the
same logits and reconstructions (`nas_kd.models.rescale.rescaled_activations`): the same teacher
as far as any user could tell. Each map mode distils the 0.48M-MAC mbv2 student of
bench.distill_ablation from each, with the quick preset's brief schedule (a CPU search's trial;
``--preset standard``: the standard one's, 630 steps on all training images), one run per seed (the same initial student and data order for every c). Validation accuracy at
the run's end; per mode and c the paired difference from c = 1.

``--baseline REV`` runs the same at a git revision (a temporary worktree, this file's worker run
against that revision's nas_kd; the rescaling is this file's, loaded from the working tree) and
adds its columns: before nas_kd.distill.map_scale the student's map terms read the teacher's
maps at whatever scale they had. Runs are kept in docs/results/teacher_scale.json as they finish
(resumable). Writes the ``teacher-scale-cpu`` section of docs/BENCHMARKS.md (``--preset standard``:
``teacher-scale-cpu-standard``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "teacher_scale.json"
SECTION = "teacher-scale-cpu"
CURRENT = "current"


def _rescale_module():
    """nas_kd/models/rescale.py of the working tree (a baseline revision may not have it)."""
    spec = importlib.util.spec_from_file_location("nas_kd_rescale_here", ROOT / "nas_kd" / "models" / "rescale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_one(mode: str, scale: float, seed: int, data_dir: str | None = None, preset: str = "quick") -> dict:
    """One brief run (``preset``'s brief schedule) of the bench's student from the shipped teacher
    at ``scale`` (one thread)."""
    import torch

    from bench.distill_ablation import SPACE, pick_students
    from nas_kd.config import get_preset
    from nas_kd.data import load_splits
    from nas_kd.distill.trainer import train
    from nas_kd.models.shipped import DEFAULT_SPEC
    from nas_kd.models.student import build_student
    from nas_kd.models.teachers import resolve_teacher
    from nas_kd.space import SearchSpace
    from nas_kd.train import NonFiniteLossError, reset_finite_checks

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    schedule = get_preset(preset).brief
    splits = load_splits("fashion-mnist", data_dir, seed=0, train_subset=schedule.train_subset)
    teacher = resolve_teacher(DEFAULT_SPEC, "fashion-mnist", get_preset("standard").teacher, preset="standard", device=cpu, data_dir=data_dir, reconstruction=True, log=lambda *_: None)[0].eval()
    if scale != 1.0:
        teacher = _rescale_module().rescaled_activations(teacher, scale)
    _, cfg = pick_students(SearchSpace.load(SPACE), splits.info.input_shape, splits.info.num_classes)["small"]
    torch.manual_seed(seed)
    student = build_student(cfg, splits.info.channels, splits.info.num_classes)
    start = time.perf_counter()
    run = {"mode": mode, "scale": scale, "seed": seed, "student": cfg.describe()}
    try:
        m = train(student, teacher, splits, schedule, mode, device=cpu, seed=seed)
    except NonFiniteLossError as e:
        reset_finite_checks()
        return run | {"diverged": str(e), "seconds": time.perf_counter() - start}
    return run | {"val_accuracy": m["val_accuracy"], "seconds": time.perf_counter() - start}


def _key(tree: str, mode: str, scale: float, seed: int, preset: str = "quick") -> str:
    return ("" if preset == "quick" else f"{preset}:") + f"{tree}/{mode}/{scale:g}/{seed}"


def _worker_main(args) -> None:
    """``--worker OUT``: the runs given, against the nas_kd on sys.path, one JSON line each to OUT."""
    with open(args.worker, "a") as out:
        for item in args.runs.split(";"):
            mode, scale, seed = item.split(":")
            out.write(json.dumps(run_one(mode, float(scale), int(seed), args.data_dir, args.preset)) + "\n")
            out.flush()


def _in_tree(tree: Path, items: list[tuple[str, float, int]], data_dir: str | None, preset: str = "quick") -> list[dict]:
    """``run_one`` for each item in a fresh process against ``tree``'s nas_kd."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out), "--runs", ";".join(f"{m}:{s:g}:{k}" for m, s, k in items), "--preset", preset]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    out.unlink()
    return rows


def _cell(runs: dict, tree: str, mode: str, scale: float, seeds: list[int], preset: str = "quick") -> dict[int, float]:
    return {s: 100 * r["val_accuracy"] for s in seeds if (r := runs.get(_key(tree, mode, scale, s, preset))) and "val_accuracy" in r}


def _diff(a: dict[int, float], b: dict[int, float]) -> str:
    from nas_kd.stats import paired_difference

    if not set(a) & set(b):
        return "-"
    d = paired_difference(a, b)
    return f"{d.mean:+.2f}" + (f" [{d.low:+.2f}, {d.high:+.2f}]" if d.low is not None else "") + f" (n={d.n})"


def table(runs: dict, modes: list[str], scales: list[float], seeds: list[int], baseline: str | None, preset: str = "quick") -> list[str]:
    """Rows per (mode, c): mean validation accuracy and the paired difference from c = 1, for the
    current code and (``baseline``) the revision; then current minus baseline at the same c."""
    trees = [CURRENT] + ([baseline] if baseline else [])
    head = "| mode | c |" + "".join(f" {t} val % (mean) | {t}: minus c = 1 [95% CI] | diverged |" for t in trees) + (" current minus baseline [95% CI] |" if baseline else "")
    lines = [head, "|---|---:|" + "---:|---|---:|" * len(trees) + ("---|" if baseline else "")]
    for mode in modes:
        for scale in scales:
            row = f"| {mode} | {scale:g} |"
            for tree in trees:
                accs = _cell(runs, tree, mode, scale, seeds, preset)
                diverged = sum(1 for s in seeds if "diverged" in runs.get(_key(tree, mode, scale, s, preset), {}))
                ref = _cell(runs, tree, mode, 1.0, seeds, preset)
                row += f" {statistics.fmean(accs.values()):.2f} |" if accs else " - |"
                row += f" {_diff(accs, ref) if scale != 1.0 else '-'} | {diverged} |"
            if baseline:
                row += f" {_diff(_cell(runs, CURRENT, mode, scale, seeds, preset), _cell(runs, baseline, mode, scale, seeds, preset))} |"
            lines.append(row)
    return lines


def render(runs: dict, args, argv: list[str], modes, scales, seeds) -> str:
    from bench._report import hardware
    from nas_kd.config import get_preset

    brief = get_preset(args.preset).brief
    student = next((r["student"] for r in runs.values() if "student" in r), "?")
    return "\n".join(
        [
            "## Does distillation depend on the teacher's map scale? (CPU" + ("" if args.preset == "quick" else f", {args.preset} brief") + ")",
            "",
            f"Command: `{' '.join(['python -m bench.teacher_scale', *map(shlex.quote, argv)])}`  ",
            f"Hardware: {hardware()}; one torch thread per run  ",
            f"Date: {time.strftime('%Y-%m-%d')}",
            "",
            "The shipped resnet20 teacher (c = 1) and copies whose every stage map is c times as large with the same logits and reconstructions "
            "(`nas_kd.models.rescale.rescaled_activations`: to a user, the same teacher). Each mode distils "
            f"`{student}` (0.48M MACs) with the {args.preset} preset's brief schedule ({brief.epochs} epochs of {brief.train_subset or 'all'} training images, batch {brief.batch_size}, lr {brief.lr}); "
            f"seeds {', '.join(map(str, seeds))} (the same initial student and data order for every c and revision); validation accuracy at the run's end, "
            "the test set unread. *minus c = 1*: the paired difference from the unscaled teacher's run on the same seed."
            + (f" `{args.baseline}`: the revision before the map terms were put in the teacher's units (nas_kd.distill.map_scale)." if args.baseline else ""),
            "",
            *table(runs, modes, scales, seeds, args.baseline, args.preset),
        ]
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="full,ksanc,ktan,zhang")
    ap.add_argument("--scales", default="1,0.1,10")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--preset", default="quick", choices=("quick", "standard"), help="whose brief schedule the runs train with")
    ap.add_argument("--baseline", help="a git revision to run the same against")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once, one torch thread each")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--runs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker_main(args)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        modes = args.modes.split(",")
        scales = [float(s) for s in args.scales.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        print(f"bench.teacher_scale: {e}: --scales and --seeds take comma-separated numbers", file=sys.stderr)
        raise SystemExit(2) from None
    if 1.0 not in scales or any(s <= 0 for s in scales):
        print("bench.teacher_scale: --scales must hold 1 (the reference) and only positive factors", file=sys.stderr)
        raise SystemExit(2)
    runs = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else {}
    from bench._report import record_run, resolve_commit

    trees = {CURRENT: ROOT}
    if args.baseline:  # kept runs are keyed by the commit, not by a name that moves (HEAD)
        found = resolve_commit(args.baseline, ROOT)
        if found is None:
            print(f"bench.teacher_scale: --baseline {args.baseline} is not a git revision here", file=sys.stderr)
            raise SystemExit(2)
        args.baseline = found[:7]
    with tempfile.TemporaryDirectory(prefix="teacher_scale-") as tmp:
        if args.baseline:
            trees[args.baseline] = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[args.baseline]), args.baseline], check=True)
        try:
            todo = [(t, m, s, k) for t in trees for m in modes for s in scales for k in seeds if _key(t, m, s, k, args.preset) not in runs]
            print(f"teacher_scale: {len(todo)} runs to train ({len(runs)} kept)", file=sys.stderr, flush=True)
            # One process per (tree, mode, seed): its runs share the teacher's load and data.
            groups: dict[tuple, list] = {}
            for t, m, s, k in todo:
                groups.setdefault((t, m, k), []).append((m, s, k))
            with cf.ThreadPoolExecutor(max(1, args.jobs)) as pool:
                futures = {pool.submit(_in_tree, trees[t], items, args.data_dir, args.preset): t for (t, _, _), items in groups.items()}
                for fut in cf.as_completed(futures):
                    for r in fut.result():
                        key = _key(futures[fut], r["mode"], r["scale"], r["seed"], args.preset)
                        runs = record_run(RESULTS, key, r, {"runs": runs}, write=not args.no_write)["runs"]  # merged with what other benches kept meanwhile
                        acc = f"{100 * r['val_accuracy']:.2f}%" if "val_accuracy" in r else "diverged"
                        print(f"teacher_scale: {futures[fut]} {r['mode']} c={r['scale']:g} seed {r['seed']}: {acc}", file=sys.stderr, flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[args.baseline])], check=False)
    text = render(runs, args, argv, modes, scales, seeds)
    print(text)
    if not args.no_write:
        from bench._report import write_section

        write_section(SECTION + ("" if args.preset == "quick" else f"-{args.preset}"), text)


if __name__ == "__main__":
    main()
