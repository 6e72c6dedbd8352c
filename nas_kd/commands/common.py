"""Argument groups several subcommands share, so each option is spelled and documented once."""

from __future__ import annotations

import argparse

from nas_kd.data import canonical_name

__all__ = ["add_data_args", "add_run_args", "add_teacher_args"]


def add_data_args(p: argparse.ArgumentParser) -> None:
    # Spelt as the registry spells it from here on: the teacher's file and the study are keyed by it.
    p.add_argument("--dataset", default="fashion-mnist", type=canonical_name, help="fashion-mnist (default), mnist, cifar10, cifar100, npz:PATH, synthetic; any case, with or without - or _")
    p.add_argument("--data-dir", default=None, help="folder to look in first for the dataset's files")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["quick", "standard"], default=None, help="quick (default without a GPU) or standard (default with one)")
    p.add_argument("--seed", type=int, default=0, help="drives Python, NumPy, torch and the data order")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bars (default: only on a terminal)")


def add_teacher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default="default", help="default (the teacher that ships with nas-kd for the dataset; resnet20 trained here if none ships), a registry name (resnet20, resnet56, wrn-16-4, tv:resnet18: the cached teacher for the dataset, trained if missing) or a checkpoint/TorchScript path")
    p.add_argument("--teacher-recon", action="store_true", help="a teacher trained with the reconstruction head (needed by mode zhang)")
