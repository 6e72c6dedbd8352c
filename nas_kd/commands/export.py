"""`nas-kd export`: write a finalized study's winner as state dict, arch JSON, TorchScript and ONNX."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("export", help="export a finalized study's winner to runs/<study>/export/")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/<study>/study.db)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas_kd.export import export_study

    export_study(args.study, args.storage, log=lambda text: print(text, flush=True))
    return 0
