"""Teacher accuracy and training time per architecture and preset.

    python -m bench.teachers [--preset standard] [--archs resnet20,resnet56,wrn-16-4] [--seeds 0]

Trains (or reuses from runs/teachers/) each teacher through the same code path as `nas-kd teacher`
and writes the "teachers-<preset>-<device>" section of docs/BENCHMARKS.md. Targets (issue 2, H100,
standard preset, Fashion-MNIST): ResNet-20 class >= 93.5 %, a larger one >= 94.5 %, each < 2 min.
"""

from __future__ import annotations

import argparse
import statistics

from bench._report import hardware, write_section
from nas_kd.config import get_preset
from nas_kd.device import resolve_device
from nas_kd.models.teachers import TEACHER_DIR, ensure_teacher

__all__ = ["train_teachers", "teacher_table", "recipe", "main"]


def train_teachers(dataset: str, archs: list[str], schedule, *, preset: str, seeds: list[int], device, root=TEACHER_DIR, data_dir=None, reconstruction: bool = False, log=print) -> list[dict]:
    """Each arch on each seed, trained once and cached (a reused one keeps its recorded time):
    one dict per arch with per-seed test accuracy (%), train seconds, img/s and the files."""
    rows = []
    for arch in archs:
        runs = [ensure_teacher(dataset, arch, schedule, preset=preset, seed=s, device=device, root=root, data_dir=data_dir, reconstruction=reconstruction, log=log) for s in seeds]
        rows.append({
            "arch": arch,
            "test_accuracy": [100 * meta["test_accuracy"] for _, meta, _ in runs],
            "train_seconds": [meta["train_seconds"] for _, meta, _ in runs],
            "images_per_second": [meta["images_per_second"] for _, meta, _ in runs],
            "paths": [str(path) for _, _, path in runs],
        })
    return rows


def teacher_table(rows: list[dict]) -> list[str]:
    out = ["| teacher | test accuracy (%) | train time (s) | train img/s |", "|---|---:|---:|---:|"]
    for r in rows:
        accs = r["test_accuracy"]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        out.append(f"| {r['arch']} | {statistics.mean(accs):.2f} ± {std:.2f} | {statistics.mean(r['train_seconds']):.1f} | {statistics.mean(r['images_per_second']):,.0f} |")
    return out


def recipe(schedule, seeds: str) -> str:
    n = schedule.train_subset or "all"
    return (
        f"Recipe: {schedule.epochs} epochs on {n} training examples, batch {schedule.batch_size}, SGD+Nesterov lr {schedule.lr}, "
        f"warm-up {schedule.warmup_epochs} epochs then cosine, weight decay {schedule.weight_decay}; seeds {seeds}. "
        "Test accuracy on the 10,000-image test set; train time spans the training loop, each epoch's validation pass included, the final test pass not."
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--archs", default="resnet20,resnet56,wrn-16-4")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--root", default="runs/teachers")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    preset = get_preset(args.preset)
    schedule = preset.teacher.replace(epochs=args.epochs)
    rows = train_teachers(args.dataset, args.archs.split(","), schedule, preset=preset.name, seeds=[int(s) for s in args.seeds.split(",")], device=device, root=args.root)
    cmd = f"python -m bench.teachers --dataset {args.dataset} --preset {preset.name} --archs {args.archs} --seeds {args.seeds}" + (f" --epochs {args.epochs}" if args.epochs else "")
    body = "\n".join([
        f"## Teachers: {args.dataset}, {preset.name} preset, {device.type.upper()}",
        "",
        f"Command: `{cmd}`  ",
        f"Hardware: {hardware()}  ",
        recipe(schedule, args.seeds),
        "",
        *teacher_table(rows),
    ])
    write_section(f"teachers-{preset.name}-{device.type}", body)
    print(body)


if __name__ == "__main__":
    main()
