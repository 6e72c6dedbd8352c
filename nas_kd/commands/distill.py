"""`nas-kd distill`: train one student from the cached teacher with one distillation mode.

The student is a JSON `StudentConfig` (``--student-config``) or a uniform member of a search
space (``--space FILE --uniform S``). The teacher is a checkpoint/TorchScript path or a registry
name, meaning the cached teacher of that architecture for the dataset and preset (trained first
if missing). The student trains with the preset's *full* schedule and reports validation and
test accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nas_kd.commands.common import add_data_args, add_run_args, add_teacher_args

__all__ = ["register", "run", "load_student_config"]


def register(sub) -> None:
    from nas_kd.distill.modes import KNOB_KEYS, MODES, WEIGHT_KEYS

    p = sub.add_parser("distill", help="distil one student from the teacher and report its accuracy")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--student-config", metavar="FILE", help="a student config JSON file (as search runs write them)")
    which.add_argument("--space", metavar="FILE", help="a search space YAML file; pick its member with --uniform")
    p.add_argument("--uniform", type=int, metavar="S", help="with --space: the uniform member S (0 = smallest)")
    add_teacher_args(p)
    p.add_argument("--teacher-seed", type=int, default=0, help="seed of the cached teacher, and of the validation split it left out (default 0)")
    # The preset's, as for a search: what a search would train this student with.
    p.add_argument("--mode", default=None, help=f"distillation mode: {', '.join(MODES)} (default: the preset's, kd for both; full is the whole adversarial distiller)")
    p.add_argument("--loss-weights", default=None, help=f"override weights/knobs, e.g. kd=0.5,feat=1; keys: {', '.join(WEIGHT_KEYS + KNOB_KEYS)}")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's full-schedule epochs")
    p.add_argument("--lr", type=float, default=None, help="override the full schedule's learning rate")
    p.add_argument("--train-subset", type=int, default=None, help="train on this many examples (stratified); 0 = all")
    add_data_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def load_student_config(args):
    """The `StudentConfig` named by --student-config or --space/--uniform; `UserError` otherwise."""
    from nas_kd.errors import UserError
    from nas_kd.models.student import StudentConfig

    if args.student_config:
        if args.uniform is not None:
            raise UserError("--uniform goes with --space, not with --student-config")
        try:
            text = Path(args.student_config).read_text()
        except OSError as e:
            raise UserError(f"cannot read student config {args.student_config}: {e.strerror or e}") from None
        try:
            return StudentConfig.from_json(text)
        except UserError as e:
            raise UserError(f"{args.student_config}: {e}") from None
    if args.uniform is None:
        raise UserError("--space needs --uniform S to pick a member (0 = smallest)")
    from nas_kd.space import SearchSpace

    return SearchSpace.load(args.space).uniform(args.uniform)


def run(args) -> int:
    from nas_kd.config import get_preset
    from nas_kd.data import dataset_info, load_splits, require_files
    from nas_kd.device import resolve_device, seed_everything
    from nas_kd.distill import check_teacher, get_mode, parse_loss_weights, train
    from nas_kd.distill.trainer import RECON_HINT
    from nas_kd.errors import UserError
    from nas_kd.models.shipped import DEFAULT_SPEC, shipped_teacher
    from nas_kd.models.student import build_student
    from nas_kd.models.teachers import is_teacher_path, parse_arch, resolve_teacher

    # Every cheap check before any data is read or any teacher trained.
    preset = get_preset(args.preset)
    mode = get_mode(args.mode or preset.mode).override(parse_loss_weights(args.loss_weights))
    cfg = load_student_config(args)
    info = dataset_info(args.dataset, args.data_dir)
    schedule = preset.full.replace(epochs=args.epochs, lr=args.lr)
    if args.train_subset is not None:  # 0 means the whole training split
        schedule = dataclasses.replace(schedule, train_subset=args.train_subset or None)
    device = resolve_device(args.device)
    require_files(info.name, args.data_dir)  # before the teacher line is printed (or a teacher trained)
    teacher = None
    if mode.uses_teacher:
        is_path = is_teacher_path(args.teacher)
        shipped = args.teacher == DEFAULT_SPEC and shipped_teacher(info.name) is not None  # ships with its decoder
        if not is_path and args.teacher != DEFAULT_SPEC:
            parse_arch(args.teacher)
        if mode.needs_reconstruction and not is_path and not shipped and not args.teacher_recon:
            raise UserError(f"mode '{mode.name}' needs a teacher trained with the reconstruction head: add --teacher-recon, or {RECON_HINT}")
        teacher, meta, path = resolve_teacher(
            args.teacher, args.dataset, preset.teacher, preset=preset.name, seed=args.teacher_seed, device=device, data_dir=args.data_dir, reconstruction=args.teacher_recon
        )
        check_teacher(mode, teacher)
        print(f"teacher: {meta['arch']} ({path})")
    # The validation split is the teacher's: its seed keeps the teacher's training examples out.
    split_seed = int(meta.get("seed", args.teacher_seed)) if teacher is not None else args.teacher_seed
    splits = load_splits(args.dataset, args.data_dir, seed=split_seed, train_subset=schedule.train_subset)
    seed_everything(args.seed)  # the student's initial weights follow --seed
    student = build_student(cfg, info.channels, info.num_classes)
    print(f"student: {cfg.describe()}")
    print(f"mode: {mode.describe()}")
    metrics = train(student, teacher, splits, schedule, mode, device=device, seed=args.seed, show_progress=args.progress, evaluate_test=True, log=print)
    print(f"val accuracy:  {metrics['val_accuracy']:.4f}")
    print(f"test accuracy: {metrics['test_accuracy']:.4f}")
    print(f"train: {metrics['train_seconds']:.1f}s, {metrics['images_per_second']:.0f} images/s")
    return 0
