"""Training pieces shared by teacher training and the distiller: optimiser, LR schedule,
evaluation, and per-epoch bookkeeping. The loops themselves live where they are read
(`nas_kd.models.teacher_training.train_teacher`, `nas_kd.distill.trainer.train`)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

import torch
from torch import nn

from nas_kd.config import Schedule
from nas_kd.data import DeviceLoader, Splits
from nas_kd.device import autocast, memory_format
from nas_kd.errors import NonFiniteLossError  # re-exported: where the checks that raise it live

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "make_loaders",
    "progress",
    "NonFiniteLossError",
    "check_finite",
    "flush_finite_checks",
    "reset_finite_checks",
]


class _PendingChecks:
    """NaN/inf checks not yet read back from the device: a flag (any non-finite so far) and the
    first non-finite value, both device tensors, so recording one costs no host sync."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.bad: torch.Tensor | None = None
        self.value: torch.Tensor | None = None
        self.count, self.what = 0, "loss"

    def add(self, loss: torch.Tensor, what: str) -> None:
        value = loss.detach().float().flatten()[0]
        bad = ~torch.isfinite(loss.detach()).all()
        if self.bad is None:
            self.bad, self.value = bad, value
        else:
            self.value = torch.where(self.bad, self.value, value)  # keeps the first non-finite value
            self.bad = self.bad | bad
        self.count, self.what = self.count + 1, what


_pending = _PendingChecks()


def check_finite(loss: torch.Tensor, what: str = "loss") -> None:
    """Raise `NonFiniteLossError` when ``loss`` is NaN or inf.

    On a CPU (and with ``check_every=1``) at once. On a GPU the check is recorded on the device and
    read back every `nas_kd.device.check_interval` steps and at every `evaluate` (so every epoch
    end): the host never waits for the device in between, and a diverged run still stops within
    that many steps, before its accuracy is read."""
    from nas_kd.device import check_interval

    every = check_interval(loss.device)
    if every <= 1:
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(f"{what} became {loss.detach().float().flatten()[0].item()}")
        return
    _pending.add(loss, what)
    if _pending.count >= every:
        flush_finite_checks()


def flush_finite_checks() -> None:
    """Read the deferred checks back (one host sync); raise if any loss was NaN or inf."""
    bad, value, what = _pending.bad, _pending.value, _pending.what
    _pending.clear()
    if bad is not None and bool(bad):
        raise NonFiniteLossError(f"{what} became {value.item()}")


def reset_finite_checks() -> None:
    """Forget deferred checks without reading them (a new training run starts; the last one ended
    with an exception of its own)."""
    _pending.clear()


def build_optimizer(params: Iterable[tuple[str, nn.Parameter]], schedule: Schedule, lr: float | None = None, *, fused: bool = False, device_lr: torch.device | None = None) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; no weight decay on biases and norm weights (1-D tensors),
    which only hurts them. ``fused``: one fused kernel per group. ``device_lr``: each group's
    learning rate is a tensor on that device, which the scheduler fills in place, so a step
    captured in a CUDA graph reads the current rate at every replay (needs ``fused``)."""
    decay, no_decay = [], []
    for _, p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    rate = lr or schedule.lr
    groups = [{"params": decay, "weight_decay": schedule.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if device_lr is not None:
        for g in groups:  # one tensor per group: the scheduler fills each group's own
            g["lr"] = torch.tensor(rate, dtype=torch.float32, device=device_lr)
            # A float base rate: a scheduler that took the tensor itself as its base (torch
            # before the fix of pytorch/pytorch#163103) would compound its factors on it.
            g["initial_lr"] = float(rate)
    extra = {"fused": True} if fused else {}
    return torch.optim.SGD(groups, lr=rate, momentum=schedule.momentum, nesterov=schedule.momentum > 0, **extra)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_epochs``, then cosine to zero, stepped once per batch."""
    total = max(1, schedule.epochs * steps_per_epoch)
    warm = min(total - 1, int(schedule.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loaders(
    splits: Splits,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    crop: bool = True,
    eval_batch_size: int = 1024,
) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader]:
    """(train, val, test) loaders on ``device`` with the dataset's augmentation rules
    (``crop=False``: no random crop; see `Schedule.crop`)."""
    fmt = memory_format(device)
    common = dict(device=device, mean=splits.mean, std=splits.std, memory_format=fmt)
    train = DeviceLoader(splits.train, batch_size=batch_size, train=True, seed=seed, flip=splits.info.flip, pad=None if crop else 0, **common)
    val = DeviceLoader(splits.val, batch_size=eval_batch_size, train=False, **common)
    test = DeviceLoader(splits.test, batch_size=eval_batch_size, train=False, **common)
    return train, val, test


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DeviceLoader) -> float:
    """Top-1 accuracy in [0, 1]; restores the model's train/eval mode afterwards. Deferred NaN/inf
    checks are read first: no accuracy is measured on weights a non-finite loss has broken."""
    flush_finite_checks()
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=loader.device)
    for x, y in loader:
        with autocast(loader.device):
            logits = model(x)
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    return correct.item() / max(1, loader.num_examples)


def progress(iterable, *, total: int | None = None, desc: str = "", enabled: bool | None = None, leave: bool = False):
    """A tqdm bar on a terminal; the bare iterable when stderr is not a TTY (logs, CI)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)
