"""The fixed teacher a search uses: the on-disk cache, loading, and how a ``--teacher`` is resolved.

A teacher is trained once (`nas_kd.models.teacher_training`) and cached as
``runs/teachers/<key>.pt``, keyed by dataset, architecture (`nas_kd.models.teacher_nets`), recipe,
seed and reconstruction head. Checkpoints hold ``{"format", "state_dict", "meta"}`` with plain
types only, are written atomically (temp file + rename) and are read with ``weights_only=True``.
``--teacher default`` is the teacher that ships with the package (`nas_kd.models.shipped`).
The names of the network and training modules are re-exported here for callers that want one
import for "the teacher".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import time
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from nas_kd.config import PRESETS, Schedule, get_preset
from nas_kd.data import DatasetInfo, dataset_slug
from nas_kd.device import device_name, memory_format, seed_everything
from nas_kd.errors import NonFiniteLossError, UserError
from nas_kd.models.teacher_nets import ReconstructionDecoder, ScriptedTeacher, build_teacher, parse_arch
from nas_kd.models.teacher_training import train_teacher

__all__ = [
    "build_teacher",
    "parse_arch",
    "ReconstructionDecoder",
    "ScriptedTeacher",
    "train_teacher",
    "teacher_key",
    "save_teacher",
    "load_teacher",
    "load_verified",
    "ensure_teacher",
    "resolve_teacher",
    "is_teacher_path",
    "teacher_meta",
    "CHECKPOINT_FORMAT",
    "TEACHER_DIR",
]

CHECKPOINT_FORMAT = "nas-kd-teacher/1"
TEACHER_DIR = Path("runs") / "teachers"


def teacher_key(dataset: str, arch: str, schedule: Schedule, seed: int, reconstruction: bool) -> str:
    """Readable and unique: dataset, arch, recon flag, seed and a hash of the exact recipe."""
    recipe = hashlib.sha1(json.dumps(dataclasses.asdict(schedule), sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset_slug(dataset)}_{parse_arch(arch).replace(':', '-')}{'_recon' if reconstruction else ''}_s{seed}_{recipe}"


def save_teacher(path: str | os.PathLike, model: nn.Module, meta: dict) -> Path:
    """Atomically write ``{"format", "state_dict", "meta"}``: temp file in the same folder, fsync, rename."""
    from nas_kd.files import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": meta}, f))


def teacher_meta(info: DatasetInfo, arch: str, schedule: Schedule, seed: int, reconstruction: bool, metrics: dict, preset: str, trained_on: str) -> dict:
    """What a teacher's checkpoint says of itself; ``trained_on``: the device, `nas_kd.device.device_name`
    (the machine a shipped teacher's manifest names: scripts/ship_teacher.py)."""
    import nas_kd

    return {
        "dataset": info.name,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "arch": parse_arch(arch),
        "reconstruction": bool(reconstruction),
        **({"decoder_version": ReconstructionDecoder.VERSION} if reconstruction else {}),
        "preset": preset,
        "recipe": dataclasses.asdict(schedule),
        "seed": seed,
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "train_seconds": metrics["train_seconds"],
        "images_per_second": metrics["images_per_second"],
        "history": metrics["history"],
        "versions": {"nas_kd": nas_kd.__version__, "torch": str(torch.__version__), "python": platform.python_version()},
        "trained_on": trained_on,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry a ``code/`` folder; ``torch.save`` archives never do."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_teacher(path: str | os.PathLike, info: DatasetInfo, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load a cached teacher (or a TorchScript file) for ``info``; frozen, in eval mode.

    Refuses, with a one-line `UserError`, a file that is missing, not weights-only (a pickle that
    would run code is never unpickled), not a nas-kd teacher, or made for another dataset,
    class count or input shape.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher file '{path}' does not exist: train one with 'nas-kd teacher --dataset {info.name}' or pass an existing path")
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise UserError(f"'{path}' is not a loadable TorchScript file ({e.__class__.__name__}): save it with torch.jit.save(torch.jit.script(model), path)") from None
        model: nn.Module = ScriptedTeacher(module, info.input_shape, info.num_classes)
        meta = {"arch": f"torchscript:{path.name}", "dataset": info.name, "num_classes": info.num_classes, "input_shape": list(info.input_shape), "reconstruction": False}
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. torch's note on pickle protocols: noise for a user
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            why = f"it would import {found.group(1)}" if found else f"{e.__class__.__name__}: not a torch.save file of tensors and plain data"
            raise UserError(f"refusing to load '{path}': it is not a weights-only nas-kd checkpoint ({why}); train a teacher with 'nas-kd teacher'") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("meta"), dict):
            raise UserError(f"'{path}' is not a nas-kd teacher checkpoint (no '{CHECKPOINT_FORMAT}' header): train one with 'nas-kd teacher'")
        meta = ckpt["meta"]
        _check_compatible(path, meta, info)
        recon = tuple(meta["input_shape"][1:]) if meta.get("reconstruction") else None
        model = build_teacher(meta["arch"], info.channels, info.num_classes, reconstruction=recon, decoder_version=int(meta.get("decoder_version", 1)))
        try:
            model.load_state_dict(ckpt["state_dict"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise UserError(f"'{path}' does not match architecture {meta.get('arch')} ({str(e).splitlines()[0][:120]}): the file is damaged; train the teacher again") from None
    device = torch.device(device)
    model.to(device, memory_format=memory_format(device)).eval()  # the layout it trained in: same kernels, same outputs
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


def load_verified(path: str | os.PathLike, sha256: str, info: DatasetInfo, device: torch.device | str = "cpu") -> tuple[nn.Module, dict] | None:
    """`load_teacher` of ``path`` if the file is there and still has ``sha256``; None otherwise
    (a study's teacher is that exact file, never one retrained or replaced since)."""
    from nas_kd.files import digest

    path = Path(path)
    if not path.is_file() or digest(path) != sha256:
        return None
    return load_teacher(path, info, device)


def _check_compatible(path: Path, meta: dict, info: DatasetInfo) -> None:
    theirs = f"'{meta.get('dataset')}' ({meta.get('num_classes')} classes, input {tuple(meta.get('input_shape') or ())})"
    ours = f"'{info.name}' ({info.num_classes} classes, input {info.input_shape})"
    if meta.get("num_classes") != info.num_classes or tuple(meta.get("input_shape") or ()) != info.input_shape or meta.get("dataset") != info.name:
        raise UserError(f"teacher '{path}' was trained on {theirs} but the data is {ours}: train a teacher for it with 'nas-kd teacher --dataset {info.name}'")


CHANCE_FACTOR = 1.5  # a trained teacher's validation accuracy under 1.5x chance is warned about


def ensure_teacher(
    dataset: str,
    arch: str,
    schedule: Schedule,
    *,
    preset: str,
    seed: int = 0,
    device: torch.device,
    data_dir=None,
    reconstruction: bool = False,
    root: str | os.PathLike = TEACHER_DIR,
    log=print,
) -> tuple[nn.Module, dict, Path]:
    """The cached teacher for (dataset, arch, recipe, seed, reconstruction): loaded if its file
    exists, otherwise trained, evaluated on the test set and saved atomically first."""
    from nas_kd.data import load_splits

    path = Path(root) / f"{teacher_key(dataset, arch, schedule, seed, reconstruction)}.pt"
    if path.is_file():
        from nas_kd.data import dataset_info

        model, meta = load_teacher(path, dataset_info(dataset, data_dir), device)
        log(f"teacher: reusing {path} ({meta['arch']}, test accuracy {meta['test_accuracy']:.4f})")
        return model, meta, path
    splits = load_splits(dataset, data_dir, seed=seed, train_subset=schedule.train_subset)
    info = splits.info
    # The initial weights follow the seed the key names, not whatever drew from the generator
    # before (a search that trains its teacher after other draws would get another teacher).
    seed_everything(seed)
    model = build_teacher(arch, info.channels, info.num_classes, reconstruction=(info.height, info.width) if reconstruction else None)
    log(f"teacher: training {parse_arch(arch)} on {info.name} ({len(splits.train)} examples, {schedule.epochs} epochs, device {device.type})")
    try:
        metrics = train_teacher(model, splits, schedule, device=device, seed=seed, log=log)
    except NonFiniteLossError as e:
        command = f"nas-kd teacher {_teacher_options(dataset, arch, schedule, preset, seed, reconstruction, lr=schedule.lr / 2)}"
        raise NonFiniteLossError(f"training the {arch} teacher at lr {schedule.lr:g}: {e}", hint=f"train it with a lower learning rate, e.g. '{command}' (its file then goes to --teacher)") from None
    meta = teacher_meta(info, arch, schedule, seed, reconstruction, metrics, preset, trained_on=device_name(device))
    save_teacher(path, model, meta)
    log(f"teacher: test accuracy {metrics['test_accuracy']:.4f} in {metrics['train_seconds']:.1f}s -> {path}")
    if metrics["val_accuracy"] < CHANCE_FACTOR / info.num_classes:
        # Saved all the same (a user may want to look at it), but every distillation from it
        # would teach noise: say so where the user is looking.
        log(f"teacher: warning: validation accuracy {metrics['val_accuracy']:.1%} is near chance for {info.num_classes} classes: this teacher learned next to nothing; train it again with a lower learning rate or more epochs (nas-kd teacher {_teacher_options(dataset, arch, schedule, preset, seed, reconstruction, lr=schedule.lr / 10)})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta, path


def _teacher_options(dataset: str, arch: str, schedule: Schedule, preset: str, seed: int, reconstruction: bool, lr: float) -> str:
    """`nas-kd teacher`'s options that train this teacher again at ``lr``: the fields that differ
    from the preset's recipe spelt out, so the suggestion trains what the user asked for."""
    # A preset the CLI does not know (a caller's own recipe): every field spelt out.
    base = get_preset(preset).teacher if preset in PRESETS else None
    options = [f"--dataset {dataset}"] + [f"--preset {preset}"] * (base is not None) + [f"--arch {arch}", f"--lr {lr:g}"]
    options += [f"--epochs {schedule.epochs}"] * (base is None or schedule.epochs != base.epochs)
    options += [f"--batch-size {schedule.batch_size}"] * (base is None or schedule.batch_size != base.batch_size)
    options += [f"--train-subset {schedule.train_subset or 0}"] * (base is None or schedule.train_subset != base.train_subset)
    options += [f"--seed {seed}"] * (seed != 0) + ["--reconstruction"] * reconstruction
    return " ".join(options)


def is_teacher_path(spec: str) -> bool:
    """A file spec (existing, or spelled like a path), as opposed to a registry name."""
    return Path(spec).expanduser().is_file() or any(sep in spec for sep in ("/", "\\")) or spec.endswith((".pt", ".ts", ".pth"))


def resolve_teacher(
    spec: str,
    dataset: str,
    schedule: Schedule,
    *,
    preset: str,
    seed: int = 0,
    device: torch.device,
    data_dir=None,
    reconstruction: bool = False,
    log=print,
) -> tuple[nn.Module, dict, Path]:
    """``spec`` is ``default`` (the teacher shipped for the dataset, `nas_kd.models.shipped`, or
    resnet20 trained here when none ships), a file (cached checkpoint or TorchScript) or a registry
    name, which means the cached teacher of that architecture for the dataset (trained first if
    missing)."""
    from nas_kd.data import dataset_info
    from nas_kd.models.shipped import DEFAULT_SPEC, FALLBACK_ARCH, shipped_teacher, verified_path

    if spec == DEFAULT_SPEC:
        entry = shipped_teacher(dataset_info(dataset, data_dir).name)
        if entry is None:
            log(f"teacher: no teacher ships for {dataset}; using {FALLBACK_ARCH} trained on this machine")
            spec = FALLBACK_ARCH
        else:
            path = verified_path(entry)
            model, meta = load_teacher(path, dataset_info(dataset, data_dir), device)
            log(f"teacher: the shipped {entry.arch} for {entry.dataset} (test accuracy {entry.test_accuracy:.4f}, sha256 {entry.sha256[:12]}; made by '{entry.command}')")
            return model, meta, path
    if is_teacher_path(spec):
        path = Path(spec).expanduser()
        model, meta = load_teacher(path, dataset_info(dataset, data_dir), device)
        return model, meta, path
    return ensure_teacher(dataset, spec, schedule, preset=preset, seed=seed, device=device, data_dir=data_dir, reconstruction=reconstruction, log=log)
