"""`nas-kd data info --dataset D`: classes, input shape and split sizes."""

from __future__ import annotations

from nas_kd.commands.common import add_data_args


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=type(p))
    info = dsub.add_parser("info", help="classes, input shape and train/val/test sizes")
    add_data_args(info)
    info.add_argument("--val-fraction", type=float, default=0.1, help="share of the training set held out for validation (default 0.1)")
    info.add_argument("--seed", type=int, default=0)
    info.set_defaults(func=run)


def run(args) -> int:
    from nas_kd.data import load_splits

    s = load_splits(args.dataset, args.data_dir, val_fraction=args.val_fraction, seed=args.seed)
    c, h, w = s.info.input_shape
    sizes = s.sizes()
    print(f"dataset:     {s.info.name}")
    print(f"classes:     {s.info.num_classes}")
    print(f"input shape: {c}x{h}x{w}")
    print(f"train:       {sizes['train']}")
    print(f"val:         {sizes['val']}  (stratified, seed {args.seed}; train + val = {sizes['train'] + sizes['val']})")
    print(f"test:        {sizes['test']}")
    print(f"flip aug:    {'yes' if s.info.flip else 'no'}")
    print(f"mean/std:    {', '.join(f'{m:.4f}' for m in s.mean)} / {', '.join(f'{v:.4f}' for v in s.std)}")
    return 0
