"""`train`: distil one student from a frozen teacher under one schedule and mode.

One loop, read top to bottom: build the parts the mode needs, then per epoch run `DistillStep`
on every batch (discriminators first, then the student), evaluate on the validation split and
hand the accuracy to ``epoch_callback`` (the search prunes there; whatever it raises, such as
``optuna.TrialPruned``, propagates). The test split is read only when ``evaluate_test`` is set:
the search selects on validation accuracy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import torch
from torch import nn

from nas_kd.config import Schedule
from nas_kd.data import DeviceLoader, Splits
from nas_kd.device import memory_format, seed_everything
from nas_kd.distill.modes import Mode, get_mode
from nas_kd.distill.objective import DistillObjective
from nas_kd.distill.step import DistillStep
from nas_kd.errors import UserError
from nas_kd.train import build_optimizer, build_scheduler, evaluate, make_loaders, progress

__all__ = ["train", "check_teacher", "build_step"]

RECON_HINT = "train one with 'nas-kd teacher --reconstruction' and pass it with --teacher-recon (or its .pt path)"


def check_teacher(mode: Mode, teacher: nn.Module | None) -> None:
    """A one-line `UserError` when ``teacher`` cannot serve ``mode``."""
    if not mode.uses_teacher:
        return
    if teacher is None:
        raise UserError(f"mode '{mode.name}' distils from a teacher but none was given: pass --teacher, or use mode ce")
    if mode.uses_maps and not getattr(teacher, "stage_channels", ()):
        raise UserError(f"mode '{mode.name}' matches feature maps but this teacher exposes none: use mode kd or xu, or a registry teacher")
    if mode.needs_reconstruction and getattr(teacher, "decoder", None) is None:
        raise UserError(f"mode '{mode.name}' needs a teacher trained with the reconstruction head (Zhang et al.), and this one was not: {RECON_HINT}")


def build_step(
    student: nn.Module,
    teacher: nn.Module | None,
    mode: Mode,
    schedule: Schedule,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    steps_per_epoch: int,
    device: torch.device,
) -> DistillStep:
    """Move the student to ``device`` and build the objective and optimisers around it."""
    fmt = memory_format(device)
    student.to(device, memory_format=fmt).train()
    if teacher is not None:
        teacher.to(device, memory_format=fmt).eval()
    objective = DistillObjective(mode, student, teacher, input_shape, num_classes).to(device, memory_format=fmt).train()
    optimizer = build_optimizer(itertools.chain(student.named_parameters(), objective.student_side()), schedule)
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch)
    disc_params = [p for d in objective.discriminators() for p in d.parameters()]
    disc_optimizer = None
    if disc_params:
        if mode.disc_optimizer == "sgd":
            disc_optimizer = torch.optim.SGD(disc_params, lr=mode.disc_lr, momentum=0.9)
        else:
            disc_optimizer = torch.optim.Adam(disc_params, lr=mode.disc_lr, betas=(0.5, 0.999))
    return DistillStep(student, teacher, objective, optimizer, scheduler, disc_optimizer, schedule.label_smoothing)


def train(
    student: nn.Module,
    teacher: nn.Module | None,
    splits: Splits,
    schedule: Schedule,
    mode: Mode | str,
    *,
    device: torch.device,
    seed: int,
    epoch_callback: Callable[[int, float], None] | None = None,
    show_progress: bool | None = None,
    loaders: tuple[DeviceLoader, DeviceLoader, DeviceLoader] | None = None,
    evaluate_test: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Distil ``student`` from ``teacher`` (frozen; may be None for mode ``ce``); return metrics.

    ``loaders`` = (train, val, test) reuses device-resident loaders across calls (the search);
    otherwise they are built from ``splits`` with ``schedule.batch_size``. ``epoch_callback`` gets
    (epoch from 1, validation accuracy) after every epoch. Metrics: ``val_accuracy`` (last
    epoch), ``history`` (per epoch: val accuracy, mean loss terms, seconds), ``train_seconds``
    (optimisation only, evaluation excluded), ``images_per_second``, ``mode``, ``weights`` and,
    with ``evaluate_test``, ``test_accuracy``.
    """
    mode = get_mode(mode)
    check_teacher(mode, teacher)
    if teacher is not None:
        for p in teacher.parameters():
            p.requires_grad_(False)
    seed_everything(seed)
    train_dl, val_dl, test_dl = loaders or make_loaders(splits, batch_size=schedule.batch_size, device=device, seed=seed, crop=schedule.crop)
    step = build_step(student, teacher, mode, schedule, input_shape=splits.info.input_shape, num_classes=splits.info.num_classes, steps_per_epoch=len(train_dl), device=device)
    # The student's adversarial terms switch on after this many steps (discriminators learn from step 0).
    adversarial_from = int(mode.adv_warmup * schedule.epochs * len(train_dl))
    history, train_seconds, seen, global_step = [], 0.0, 0, 0
    for epoch in range(schedule.epochs):
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        for x, y in progress(train_dl, total=len(train_dl), desc=f"{mode.name} epoch {epoch + 1}/{schedule.epochs}", enabled=show_progress):
            parts = step(x, y, adversarial=global_step >= adversarial_from)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v
            global_step += 1
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - t0
        val_acc = evaluate(student, val_dl)
        losses = {k: float(v) / len(train_dl) for k, v in sums.items()}
        history.append({"epoch": epoch + 1, "val_accuracy": val_acc, "losses": losses, "seconds": train_seconds})
        if log:
            log(f"{mode.name} epoch {epoch + 1}/{schedule.epochs}: val accuracy {val_acc:.4f} ({train_seconds:.1f}s)")
        if epoch_callback is not None:
            epoch_callback(epoch + 1, val_acc)
    metrics = {
        "mode": mode.name,
        "weights": mode.weights.active(),
        "val_accuracy": history[-1]["val_accuracy"],
        "history": history,
        "train_seconds": train_seconds,
        "images_per_second": seen / max(train_seconds, 1e-9),
    }
    if evaluate_test:
        metrics["test_accuracy"] = evaluate(student, test_dl)
    return metrics
