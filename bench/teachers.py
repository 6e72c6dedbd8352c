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
from nas_kd.models.teachers import ensure_teacher


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
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for arch in args.archs.split(","):
        runs = [ensure_teacher(args.dataset, arch, schedule, preset=preset.name, seed=s, device=device, root=args.root)[1] for s in seeds]
        accs = [m["test_accuracy"] * 100 for m in runs]
        secs = [m["train_seconds"] for m in runs]
        ips = [m["images_per_second"] for m in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append(f"| {arch} | {statistics.mean(accs):.2f} ± {std:.2f} | {statistics.mean(secs):.1f} | {statistics.mean(ips):,.0f} |")
    n = schedule.train_subset or "all"
    cmd = f"python -m bench.teachers --dataset {args.dataset} --preset {preset.name} --archs {args.archs} --seeds {args.seeds}" + (f" --epochs {args.epochs}" if args.epochs else "")
    body = "\n".join([
        f"## Teachers: {args.dataset}, {preset.name} preset, {device.type.upper()}",
        "",
        f"Command: `{cmd}`  ",
        f"Hardware: {hardware()}  ",
        f"Recipe: {schedule.epochs} epochs on {n} training examples, batch {schedule.batch_size}, SGD+Nesterov lr {schedule.lr}, "
        f"warm-up {schedule.warmup_epochs} epochs then cosine, weight decay {schedule.weight_decay}; seeds {args.seeds}. "
        "Test accuracy on the 10,000-image test set; train time excludes evaluation.",
        "",
        "| teacher | test accuracy (%) | train time (s) | train img/s |",
        "|---|---:|---:|---:|",
        *rows,
    ])
    write_section(f"teachers-{preset.name}-{device.type}", body)
    print(body)


if __name__ == "__main__":
    main()
