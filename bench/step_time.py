"""Distiller step time per mode relative to ``ce``, with the teacher's outputs cached.

    python -m bench.step_time [--steps 30] [--modes ce,kd,ktan,ksanc,xu,zhang,full,full+map_samples=32]
        [--students small,large] [--train-subset 2000] [--batch-size 128] [--threads 1]

Fashion-MNIST (real files), an untrained ResNet-20 teacher (its speed does not depend on its
weights; ``zhang`` gets the reconstruction-head twin), the mbv2 students of
`bench.distill_ablation` (closest to 0.5M and 2M MACs), the quick preset's brief augmentation
(flips, no crops: two cached views). Every mode gets one `TeacherCache` built before timing (its
build time and memory are reported separately: the search pays them once per study), then the
same ``--steps`` batches, interleaved across modes so that drifting load hits all alike. Time is
process CPU time with one thread (other load on the machine does not inflate it much), median
and minimum over steps after two warm-up steps. Targets (issue 11): kd <= 1.15x ce, full <= 1.6x ce.

Writes the ``distill-steptime-<device>`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time

import torch

from bench._report import hardware, write_section
from bench._step_timing import interleaved_times, mode_steps
from bench.distill_ablation import SPACE, pick_students
from nas_kd.config import get_preset
from nas_kd.data import load_splits
from nas_kd.device import torch_threads
from nas_kd.distill import TeacherCache, get_mode
from nas_kd.models.teachers import build_teacher
from nas_kd.space import SearchSpace
from nas_kd.train import make_loaders

CPU = torch.device("cpu")


def clock() -> float:
    return time.process_time()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--modes", default="ce,kd,ktan,ksanc,xu,zhang,full,full+map_samples=32")
    ap.add_argument("--students", default="small,large")
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    with torch_threads(args.threads):
        body = run(args, list(sys.argv[1:] if argv is None else argv))
    print(body)
    if not args.no_write:
        write_section("distill-steptime-cpu", body)


def run(args, argv: list[str]) -> str:
    modes = args.modes.split(",")
    splits = load_splits("fashion-mnist", seed=0, train_subset=args.train_subset)
    info = splits.info
    brief = get_preset("quick").brief.replace(batch_size=args.batch_size)
    loader = make_loaders(splits, batch_size=args.batch_size, device=CPU, seed=0, crop=brief.crop)[0]
    batches = list(itertools.islice(loader.batches(), args.steps + 2))
    torch.manual_seed(0)
    teachers = {recon: build_teacher("resnet20", info.channels, info.num_classes, reconstruction=info.input_shape[1:] if recon else None).eval() for recon in (False, True)}
    for t in teachers.values():
        t.requires_grad_(False)
    caches, cache_rows = {}, []
    for mode in modes:
        if get_mode(mode).uses_teacher:
            t0 = clock()
            caches[mode] = TeacherCache(teachers[get_mode(mode).needs_reconstruction], loader, mode, num_classes=info.num_classes)
            cache_rows.append(f"| {mode} | {clock() - t0:.1f} | {caches[mode].nbytes / 2**20:.1f} | {caches[mode].nbytes / (loader.views * loader.num_examples) / 1024:.1f} |")
    students = pick_students(SearchSpace.load(SPACE), info.input_shape, info.num_classes)
    rows = []
    for name in args.students.split(","):
        macs, cfg = students[name]
        steps = mode_steps(cfg, teachers, caches, modes, brief, info, len(loader), CPU, loader)
        times = interleaved_times(steps, batches, CPU)
        ce = times.get("ce")
        for mode, ts in times.items():
            ratios = f"{statistics.median(ts) / statistics.median(ce):.2f} | {min(ts) / min(ce):.2f}" if ce else "- | -"
            rows.append(f"| {name} ({macs / 1e6:.2f}M MACs) | {mode} | {1000 * statistics.median(ts):.1f} | {1000 * min(ts):.1f} | {ratios} |")
        print("\n".join(rows[-len(modes) :]), flush=True)
    lines = [
        "## Distiller step time relative to ce, teacher outputs cached (CPU)",
        "",
        f"Command: `python -m bench.step_time {' '.join(argv)}`  ",
        f"Hardware: {hardware()}; {args.threads} torch thread(s)  ",
        f"Fashion-MNIST, {loader.num_examples} training examples, {loader.views} cached view(s), batch {args.batch_size}, untrained ResNet-20 teacher; "
        f"process CPU time of {args.steps} interleaved steps per mode after 2 warm-up steps, median and minimum (the minimum is the "
        "steadier figure on a machine with other load). Targets: kd <= 1.15x ce, full <= 1.6x ce.",
        "",
        "| student | mode | median ms | min ms | x ce (median) | x ce (min) |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        "Teacher cache per mode (built once; `full` and `ksanc` include fitting the teacher attention):",
        "",
        "| mode | build CPU s | MiB | KiB per example and view |",
        "|---|---:|---:|---:|",
        *cache_rows,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
