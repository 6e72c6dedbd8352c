"""Does distillation help? Paired seeds, every mode against plain cross-entropy (issue 11).

    python -m bench.distill [--teacher default] [--students small] [--modes ce,kd,full,best]
        [--seeds 0,1,2] [--epochs 5] [--batch-size 128] [--lr 0.1] [--screen ktan,ksanc,xu,zhang]
        [--screen-epochs 1] [--threads 1] [--render]

Real Fashion-MNIST, the shipped teacher (``--teacher default``), mbv2 students from
`bench.distill_ablation.pick_students` (closest to 0.5M and 2M MACs), the whole training split,
one schedule for every mode (no crops, so the teacher's outputs are cached: two flip views).
``best`` in ``--modes`` is the single-paper mode (``--screen``) with the highest *validation*
accuracy after ``--screen-epochs`` on the first student and seed: selection never reads the test
set. Each finished run is appended to ``docs/results/distill.json`` at once (one row per student,
mode and seed; a rerun skips rows it has, so the command resumes), and the
``distill-<device>`` section of docs/BENCHMARKS.md is rendered from those rows: mean test
accuracy per mode, the paired per-seed difference against ``ce`` (and ``full`` against ``kd``)
with its 95% t-interval, the goals of issue 11, and the discriminators' accuracy per epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

from bench._report import BENCHMARKS, hardware, write_section
from bench._teacher_pass import TeacherPass
from bench.distill_ablation import SPACE, pick_students
from nas_kd.config import Schedule, get_preset
from nas_kd.data import load_splits
from nas_kd.device import resolve_device, torch_threads
from nas_kd.distill import MODES, get_mode
from nas_kd.files import digest
from nas_kd.models.student import StudentConfig
from nas_kd.models.teachers import resolve_teacher
from nas_kd.space import SearchSpace
from nas_kd.stats import paired_difference
from nas_kd.study import write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "docs" / "results"
SINGLE_PAPER = ("ktan", "ksanc", "xu", "zhang")
# Issue 11's goals on the 0.5M student, in points of test accuracy.
KD_OVER_CE = 0.5
FULL_OVER_KD = 0.3


@dataclasses.dataclass(frozen=True)
class Run:
    """What identifies one row: a rerun with the same fields is skipped."""

    student: str
    mode: str
    seed: int
    schedule: dict
    teacher_sha256: str

    def matches(self, row: dict) -> bool:
        return all(row.get(k) == v for k, v in dataclasses.asdict(self).items())


def read_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def append_row(path: Path, row: dict) -> None:
    """Atomically (`write_json`): a run killed mid-write never leaves a broken file behind."""
    write_json(path, read_rows(path) + [row])


def train_run(run: Run, cfg: StudentConfig, teacher_pass: TeacherPass, schedule: Schedule, command: str) -> dict:
    m = teacher_pass.train(cfg, schedule, run.mode, run.seed, evaluate_test=True)
    curves = [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"], "disc_accuracy": h["disc_accuracy"], "adv_gate": h["adv_gate"]} for h in m["history"]]
    return {
        **dataclasses.asdict(run),
        "test_acc": 100 * m["test_accuracy"],
        "val_acc": 100 * m["val_accuracy"],
        "architecture": cfg.describe(),
        "train_seconds": m["train_seconds"],
        "teacher_seconds": m["teacher_seconds"],
        "history": curves,
        "hardware": hardware(),
        "date": dt.date.today().isoformat(),
        "command": command,
    }


def screen(students, teacher_pass: TeacherPass, schedule, modes, seed, command, path: Path, log=print) -> tuple[str, dict[str, float]]:
    """The single-paper mode with the best validation accuracy under ``schedule`` (first student),
    and every screened mode's validation accuracy."""
    name, (_, cfg) = next(iter(students.items()))
    rows = read_rows(path)
    sha = teacher_pass.teacher.nas_kd_sha256
    for mode in modes:
        run = Run(name, mode, seed, schedule.to_dict(), sha)
        if not any(run.matches(r) for r in rows):
            row = train_run(run, cfg, teacher_pass, schedule, command)
            append_row(path, row)
            rows.append(row)
            log(f"screen {mode:6s} {name} seed {seed}: val {row['val_acc']:.2f}%")
    scored = {r["mode"]: r["val_acc"] for r in rows if r["mode"] in modes and Run(name, r["mode"], seed, schedule.to_dict(), sha).matches(r)}
    return max(modes, key=lambda m: scored[m]), scored


def paired_table(rows: list[dict], modes: list[str]) -> list[str]:
    """One student's rows: mean test accuracy and the paired difference against ce, per mode."""
    by_mode = {m: {r["seed"]: r["test_acc"] for r in rows if r["mode"] == m} for m in modes}
    ce = by_mode.get("ce", {})
    out = ["| mode | seeds | test acc (%) | vs ce: mean paired diff [95% CI] (points) | |", "|---|---:|---:|---|---|"]
    for mode in modes:
        accs = by_mode[mode]
        if not accs:
            continue
        std = statistics.stdev(accs.values()) if len(accs) > 1 else 0.0
        cell, verdict = "-", ""
        if mode != "ce" and set(accs) & set(ce):
            d = paired_difference(accs, ce)
            cell = f"{d.mean:+.2f}" + (f" [{d.low:+.2f}, {d.high:+.2f}]" if d.low is not None else " (one seed)")
            verdict = d.direction
        out.append(f"| {mode} | {len(accs)} | {statistics.mean(accs.values()):.2f} ± {std:.2f} | {cell} | {verdict} |")
    return out


def per_seed_table(rows: list[dict], modes: list[str]) -> list[str]:
    seeds = sorted({r["seed"] for r in rows})
    out = ["| mode | " + " | ".join(f"seed {s}" for s in seeds) + " | train s / run |", "|---|" + "---:|" * (len(seeds) + 1)]
    for mode in modes:
        got = {r["seed"]: r for r in rows if r["mode"] == mode}
        if got:
            cells = [f"{got[s]['test_acc']:.2f}" if s in got else "-" for s in seeds]
            out.append(f"| {mode} | " + " | ".join(cells) + f" | {statistics.mean(r['train_seconds'] for r in got.values()):.0f} |")
    return out


def curve_table(rows: list[dict], modes: list[str]) -> list[str]:
    """Discriminator accuracy per epoch (mean over seeds) for the modes that have discriminators."""
    out = []
    for mode in modes:
        runs = [r for r in rows if r["mode"] == mode and any(h["disc_accuracy"] for h in r["history"])]
        if not runs:
            continue
        epochs = len(runs[0]["history"])
        keys = sorted({k for r in runs for h in r["history"] for k in h["disc_accuracy"]})
        if not out:
            out = ["| mode | discriminator | " + " | ".join(f"epoch {e + 1}" for e in range(epochs)) + " |", "|---|---|" + "---:|" * epochs]
        for key in keys:
            cells = []
            for e in range(epochs):
                vals = [r["history"][e]["disc_accuracy"][key] for r in runs if e < len(r["history"]) and key in r["history"][e]["disc_accuracy"]]
                gates = [r["history"][e]["adv_gate"].get(key) for r in runs if e < len(r["history"])]
                gates = [g for g in gates if g is not None]
                cells.append((f"{statistics.mean(vals):.2f}" if vals else "-") + (f" ({statistics.mean(gates):.2f})" if gates else ""))
            out.append(f"| {mode} | {key} | " + " | ".join(cells) + " |")
    return out


def goal_lines(rows: list[dict]) -> list[str]:
    acc = {m: {r["seed"]: r["test_acc"] for r in rows if r["mode"] == m} for m in ("ce", "kd", "full")}
    lines = []
    for a, b, goal in (("kd", "ce", KD_OVER_CE), ("full", "kd", FULL_OVER_KD)):
        if acc[a] and acc[b] and set(acc[a]) & set(acc[b]):
            d = paired_difference(acc[a], acc[b])
            ci = f" [{d.low:+.2f}, {d.high:+.2f}]" if d.low is not None else ""
            lines.append(f"- `{a}` vs `{b}`: {d.mean:+.2f}{ci} points over {d.n} paired seeds; goal at least {goal:+.1f}: **{'met' if d.mean >= goal else 'missed'}** ({d.direction}).")
    if any("**missed**" in line for line in lines):
        lines.append("- What was tried toward the goals (term-by-term screens, R1 and weight variants, teachers), with figures: docs/DISTILLER.md, \"Evidence so far\".")
    return lines


def render(rows: list[dict], students: dict, modes: list[str], meta: dict) -> str:
    lines = [f"## Does distillation help? {meta['dataset']}, {meta['device'].upper()}", ""]
    lines += [f"Command: `python -m bench.distill {meta['command']}`  ", f"Hardware: {meta['hardware']}  ", f"Seeds: {meta['seeds']}. Date: {meta['date']}.", ""]
    lines += [
        f"Schedule (every mode): {meta['schedule_text']}. Teacher: {meta['teacher']}. "
        "Test accuracy on the 10,000-image test set, read once per run at its end; *vs ce* is the mean of the per-seed differences "
        "(same seed: same initialisation and data order) with a two-sided 95% t-interval. Per-seed rows: `docs/results/distill.json`.",
        "",
    ]
    if meta.get("screen"):
        lines += [meta["screen"], ""]
    for name, (macs, cfg) in students.items():
        mine = [r for r in rows if r["student"] == name]
        if not mine:
            continue
        lines += [f"### {name}: `{cfg.describe()}` ({macs / 1e6:.2f}M MACs)", "", *paired_table(mine, modes), ""]
        if name == "small":
            lines += [*goal_lines(mine), ""]
        lines += ["Per seed (test accuracy, %):", "", *per_seed_table(mine, modes), ""]
        curves = curve_table(mine, modes)
        if curves:
            lines += ["Discriminator accuracy per epoch, mean over seeds (real/fake for `feat`, `logit`; auxiliary classifier for `class`); in brackets the mean gate on the student's matching term:", "", *curves, ""]
    owed = [m for m in MODES if m not in modes]
    if owed:
        lines.append(f"Not run here (owed to a longer or GPU run, `make bench-gpu` ablation section): {', '.join(owed)}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--teacher", default="default", help="default (the shipped teacher), a .pt file or a registry name")
    ap.add_argument("--students", default="small", help="comma-separated: small (~0.5M MACs), large (~2M MACs)")
    ap.add_argument("--modes", default="ce,kd,full,best", help="'best' = the best --screen mode on validation")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--screen", default=",".join(SINGLE_PAPER))
    ap.add_argument("--screen-epochs", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 beats 2 on a busy 2-core CPU)")
    ap.add_argument("--train-subset", type=int, default=None, help="train on this many examples (default: all)")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR), help="where distill.json and distill_screen.json go")
    ap.add_argument("--markdown", default=str(BENCHMARKS), help="the BENCHMARKS.md whose section is rewritten")
    ap.add_argument("--render", action="store_true", help="rewrite the BENCHMARKS section from the rows already recorded; train nothing")
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    screen_modes = [m for m in args.screen.split(",") if m]
    modes = args.modes.split(",")
    for m in [*screen_modes, *(m for m in modes if m != "best")]:
        get_mode(m)  # an unknown mode fails here, before any data or teacher
    names = args.students.split(",")
    device = resolve_device(args.device)
    schedule = Schedule(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=min(1.0, args.epochs / 5), train_subset=args.train_subset, crop=False)
    results, screen_results = Path(args.results_dir) / "distill.json", Path(args.results_dir) / "distill_screen.json"
    with torch_threads(args.threads):
        splits = load_splits(args.dataset, args.data_dir, seed=0, train_subset=schedule.train_subset)  # the teacher's split: its validation images were never trained on
        info = splits.info
        students = {n: s for n, s in pick_students(SearchSpace.load(SPACE), info.input_shape, info.num_classes).items() if n in names}
        teacher, tmeta, tpath = resolve_teacher(args.teacher, args.dataset, get_preset("standard").teacher, preset="standard", seed=0, device=device, data_dir=args.data_dir, reconstruction=True)
        teacher.nas_kd_sha256 = digest(tpath)
        command = " ".join(argv)
        # One pass of the teacher for the screen and every mode, the widest cache first, at the first run that trains.
        planned = sorted({*screen_modes, *(m for m in modes if m != "best")} if "best" in modes else set(modes))
        teacher_pass = TeacherPass(teacher, splits, schedule.batch_size, device, planned=planned)
        screen_text = ""
        if "best" in modes:
            screen_schedule = dataclasses.replace(schedule, epochs=args.screen_epochs, warmup_epochs=min(1.0, args.screen_epochs / 5))
            best, scores = screen(students, teacher_pass, screen_schedule, screen_modes, int(args.seeds.split(",")[0]), command, screen_results)
            screen_text = f"`best` = **{best}**: the single-paper mode with the highest validation accuracy after {args.screen_epochs} epoch(s) on the first student, seed {args.seeds.split(',')[0]} (" + ", ".join(f"{m} {scores[m]:.2f}%" for m in screen_modes) + "; `docs/results/distill_screen.json`)."
            modes = [best if m == "best" else m for m in modes]
        seeds = [int(s) for s in args.seeds.split(",")]
        done = read_rows(results)
        if not args.render:
            missing = [Run(n, m, s, schedule.to_dict(), teacher.nas_kd_sha256) for s in seeds for n in students for m in modes]
            missing = [run for run in missing if not any(run.matches(r) for r in done)]
            for run in missing:  # seed-major: a run cut short stays paired across modes
                row = train_run(run, students[run.student][1], teacher_pass, schedule, command)
                append_row(results, row)
                print(f"{run.mode:6s} {run.student} seed {run.seed}: test {row['test_acc']:.2f}%  val {row['val_acc']:.2f}%  {row['train_seconds']:.0f} s", flush=True)
    rows = [r for r in read_rows(results) if r["schedule"] == schedule.to_dict() and r["teacher_sha256"] == teacher.nas_kd_sha256 and r["seed"] in seeds and r["mode"] in modes]
    n = schedule.train_subset or len(splits.train)
    meta = {
        "dataset": args.dataset,
        "device": device.type,
        "command": command,
        "hardware": hardware() + f"; {args.threads} torch thread(s)",
        "seeds": ", ".join(map(str, seeds)),
        "date": ", ".join(sorted({r["date"] for r in rows if r.get("date")})) or dt.date.today().isoformat(),  # when the rows were run, not rendered
        "schedule_text": f"{schedule.epochs} epochs on {n:,} training examples{'' if schedule.train_subset else ' (all)'}, batch {schedule.batch_size}, SGD+Nesterov lr {schedule.lr}, warm-up {schedule.warmup_epochs} epoch then cosine, flips, no crops",
        "teacher": f"{tmeta['arch']} at {100 * tmeta['test_accuracy']:.2f}% test (`{tpath.name}`, sha256 {teacher.nas_kd_sha256[:12]}...)",
        "screen": screen_text,
    }
    body = render(rows, students, modes, meta)
    write_section(f"distill-{device.type}", body, Path(args.markdown))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
