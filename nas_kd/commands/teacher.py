"""`nas-kd teacher`: train (or reuse) the fixed, cached teacher for a dataset."""

from __future__ import annotations

import dataclasses

from nas_kd.commands.common import add_data_args, add_run_args


def register(sub) -> None:
    p = sub.add_parser("teacher", help="train the fixed teacher once and cache it under runs/teachers/")
    add_data_args(p)
    add_run_args(p)
    p.add_argument("--arch", default="resnet20", help="resnet20 (default), resnet56, resnet20x2, wrn-16-4, tv:resnet18, ...")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--train-subset", type=int, default=None, help="train on this many examples (stratified); 0 = all")
    p.add_argument("--reconstruction", action="store_true", help="add the reconstruction head (Zhang et al.; needed by distiller mode zhang)")
    p.add_argument("--root", default="runs/teachers", help="cache folder (default runs/teachers)")
    p.set_defaults(func=run)


def run(args) -> int:
    from nas_kd.config import get_preset
    from nas_kd.data import dataset_info
    from nas_kd.device import resolve_device
    from nas_kd.models.teachers import ensure_teacher, parse_arch

    dataset_info(args.dataset, args.data_dir)  # bad names fail before anything else
    parse_arch(args.arch)
    preset = get_preset(args.preset)
    schedule = preset.teacher.replace(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if args.train_subset is not None:  # 0 means the whole training split
        schedule = dataclasses.replace(schedule, train_subset=args.train_subset or None)
    device = resolve_device(args.device)
    _, meta, path = ensure_teacher(
        args.dataset,
        args.arch,
        schedule,
        preset=preset.name,
        seed=args.seed,
        device=device,
        data_dir=args.data_dir,
        reconstruction=args.reconstruction,
        root=args.root,
    )
    print(f"{path}  arch={meta['arch']}  test_accuracy={meta['test_accuracy']:.4f}  val_accuracy={meta['val_accuracy']:.4f}")
    return 0
