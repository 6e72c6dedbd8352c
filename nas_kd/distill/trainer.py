"""`train`: distil one student from a frozen teacher under one schedule and mode.

One loop, read top to bottom: get the teacher's outputs ready (a `TeacherCache` filled once where
the loader's views are finite, else a live pass per batch), build the parts the mode needs, then
per epoch run `DistillStep` on every batch (discriminators first, then the student), evaluate on the validation split and
hand the accuracy to ``epoch_callback`` (the search prunes there; whatever it raises, such as
``optuna.TrialPruned``, propagates). The test split is read only when ``evaluate_test`` is set:
the search selects on validation accuracy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas_kd.config import Schedule
from nas_kd.data import DeviceLoader, Splits
from nas_kd.device import fused_optimisers, graphed_steps, memory_format, seed_everything
from nas_kd.distill.attention_fit import fit_teacher_attention
from nas_kd.distill.cache import TeacherCache
from nas_kd.distill.graphed import GraphedStep, maybe_graphed, tell_once
from nas_kd.distill.map_scale import teacher_map_scales
from nas_kd.distill.modes import Mode, get_mode
from nas_kd.distill.objective import DistillObjective
from nas_kd.distill.step import DistillStep
from nas_kd.errors import UserError
from nas_kd.train import build_optimizer, build_scheduler, evaluate, make_loaders, progress

__all__ = ["train", "check_teacher", "build_step", "frozen_teacher", "prepare_teacher", "MAX_CACHE_BYTES"]

MAX_CACHE_BYTES = 8 * 2**30  # above this a run keeps the live teacher pass instead of a cache

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
    cache: TeacherCache | None = None,
    teacher_attention: dict[str, torch.Tensor] | None = None,
    map_scales: Sequence[float] | None = None,
) -> DistillStep:
    """Move the student to ``device`` and build the objective and optimisers around it.
    ``teacher_attention`` (a `fit_teacher_attention` state) is required by modes with ``desc``;
    ``map_scales`` (`teacher_map_scales`) is the unit of the map terms (None: 1, the maps as they are)."""
    fmt = memory_format(device)
    student.to(device, memory_format=fmt).train()
    if teacher is not None:
        teacher.to(device, memory_format=fmt).eval()
    objective = DistillObjective(mode, student, teacher, input_shape, num_classes, teacher_attention, map_scales).to(device, memory_format=fmt).train()
    fused, graphed = fused_optimisers(device), graphed_steps(device)
    optimizer = build_optimizer(itertools.chain(student.named_parameters(), objective.student_side()), schedule, fused=fused, device_lr=device if graphed else None)
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch)
    # Adam with the usual GAN betas; each discriminator at its own learning rate.
    groups = [{"params": list(d.parameters()), "lr": lr} for d, lr in ((objective.feature_disc, mode.disc_lr), (objective.logit_disc, mode.logit_disc_lr)) if d is not None]
    # Under graphs Adam must also be capturable: its step() refuses a capture otherwise.
    extra = {"fused": True, "capturable": graphed} if fused else {}
    disc_optimizer = torch.optim.Adam(groups, betas=(0.5, 0.999), **extra) if groups else None
    return DistillStep(student, teacher, objective, optimizer, scheduler, disc_optimizer, schedule.label_smoothing, cache)


def frozen_teacher(teacher: nn.Module, device: torch.device) -> nn.Module:
    """``teacher`` as a run uses it, in place: no gradients, eval mode, on ``device`` in its memory
    layout (what a teacher cache filled elsewhere must have seen to hold the same numbers)."""
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device, memory_format=memory_format(device)).eval()


def prepare_teacher(
    teacher: nn.Module | None,
    loader: DeviceLoader,
    mode: Mode,
    num_classes: int,
    *,
    teacher_cache: TeacherCache | None,
    teacher_attention: dict[str, torch.Tensor] | None,
    max_cache_bytes: int,
    input_shape: tuple[int, int, int],
    log: Callable[[str], None] | None,
) -> tuple[TeacherCache | None, dict[str, torch.Tensor] | None]:
    """(cache, fitted teacher attention state) for a run: the caller's cache if it fits, else a
    new one where the loader's views are finite and it fits in ``max_cache_bytes``, else none
    (the teacher runs live). The attention is fitted here only when nobody passed one.

    The caller's random state is left as it was found: filling a cache builds a module (the
    loaded attention, whose throwaway initial weights drew from torch's generator), and a run
    that filled its own cache therefore initialised its adapters and discriminators from another
    point of the stream than the same run handed a cache filled elsewhere (a `--jobs` worker, a
    bench's shared file): 2M brief full, seed 0, 92.17% against 92.13% (docs/DISTILLER.md)."""
    if not mode.uses_teacher:
        return None, None
    devices = [loader.device] if loader.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if teacher_cache is not None:
            if not (teacher_cache.matches(teacher, loader) and teacher_cache.covers(mode)):
                raise ValueError(f"teacher_cache was built for another teacher, training data or mode than this '{mode.name}' run")
            return teacher_cache, teacher_cache.attention_state
        if loader.views is not None:
            size = TeacherCache.estimate_bytes(teacher, loader, mode, input_shape, num_classes)
            if size <= max_cache_bytes:
                cache = TeacherCache(teacher, loader, mode, num_classes=num_classes, attention_state=teacher_attention)
                return cache, cache.attention_state
            if log:
                log(f"teacher cache would take {size / 2**30:.1f} GiB (limit {max_cache_bytes / 2**30:.1f} GiB): running the teacher live")
        if mode.weights.desc and teacher_attention is None:
            teacher_attention = fit_teacher_attention(teacher, loader, num_classes)
        return None, teacher_attention


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
    teacher_cache: TeacherCache | None = None,
    teacher_attention: dict[str, torch.Tensor] | None = None,
    max_cache_bytes: int = MAX_CACHE_BYTES,
) -> dict:
    """Distil ``student`` from ``teacher`` (frozen; may be None for mode ``ce``); return metrics.

    ``loaders`` = (train, val, test) reuses device-resident loaders across calls (the search);
    otherwise they are built from ``splits`` with ``schedule.batch_size``. ``teacher_cache``
    reuses the teacher's outputs across calls (build it once with ``TeacherCache(teacher,
    loaders[0], mode, num_classes=...)``); without one, a cache is built here where the loader
    allows it. ``teacher_attention`` is a `fit_teacher_attention` state for modes with ``desc``
    (fitted here if absent). ``epoch_callback`` gets (epoch from 1, validation accuracy) after
    every epoch. Metrics: ``val_accuracy`` (last epoch), ``history`` (per epoch: val accuracy,
    mean loss terms, mean discriminator accuracies ``disc_accuracy`` and adversarial gate
    factors ``adv_gate``, seconds), ``train_seconds`` (optimisation only), ``teacher_seconds``
    (building the cache or fitting the attention in this call), ``images_per_second``,
    ``mode``, ``weights`` and, with ``evaluate_test``, ``test_accuracy``.
    """
    mode = get_mode(mode)
    check_teacher(mode, teacher)
    if teacher is not None:
        frozen_teacher(teacher, device)
    seed_everything(seed)
    train_dl, val_dl, test_dl = loaders or make_loaders(splits, batch_size=schedule.batch_size, device=device, seed=seed, crop=schedule.crop)
    info = splits.info
    t0 = time.perf_counter()
    cache, attention = prepare_teacher(
        teacher, train_dl, mode, info.num_classes, teacher_cache=teacher_cache, teacher_attention=teacher_attention, max_cache_bytes=max_cache_bytes, input_shape=info.input_shape, log=log
    )
    teacher_seconds = time.perf_counter() - t0  # ~0 when the caller passed a cache
    # Measured once per teacher and training data (a search's trials share them).
    scales = teacher_map_scales(teacher, train_dl) if mode.uses_maps else None
    step = build_step(
        student, teacher, mode, schedule, input_shape=info.input_shape, num_classes=info.num_classes, steps_per_epoch=len(train_dl), device=device, cache=cache, teacher_attention=attention, map_scales=scales
    )
    # The `graph` switch: a CUDA graph per run; a step that cannot be captured trains eagerly.
    step = maybe_graphed(step, device, on_capture_failure=tell_once(log))
    # The student's adversarial terms switch on after this many steps (discriminators learn from step 0).
    adversarial_from = int(mode.adv_warmup * schedule.epochs * len(train_dl))
    history, train_seconds, seen, global_step = [], 0.0, 0, 0
    for epoch in range(schedule.epochs):
        t0 = time.perf_counter()
        sums = _Means()
        for b in progress(train_dl.batches(), total=len(train_dl), desc=f"{mode.name} epoch {epoch + 1}/{schedule.epochs}", enabled=show_progress):
            r = step(b.x, b.y, adversarial=global_step >= adversarial_from, index=b.index, flipped=b.flipped)
            sums.add({**_keyed("losses", r.losses), **_keyed("disc_accuracy", r.disc_accuracy), **_keyed("adv_gate", r.gates)})
            global_step += 1
            seen += len(b.y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - t0
        val_acc = evaluate(student, val_dl)
        record = {"epoch": epoch + 1, "val_accuracy": val_acc, **sums.means_by_group(("losses", "disc_accuracy", "adv_gate")), "seconds": train_seconds}
        history.append(record)
        if log:
            log(f"{mode.name} epoch {epoch + 1}/{schedule.epochs}: val accuracy {val_acc:.4f} ({train_seconds:.1f}s){_describe_discriminators(record)}")
        if epoch_callback is not None:
            epoch_callback(epoch + 1, val_acc)
    metrics = {
        "mode": mode.name,
        "weights": mode.weights.active(),
        "val_accuracy": history[-1]["val_accuracy"],
        "history": history,
        "train_seconds": train_seconds,
        "teacher_seconds": teacher_seconds,
        "images_per_second": seen / max(train_seconds, 1e-9),
    }
    if isinstance(step, GraphedStep):  # how the `graph` switch went: "captured", or why it fell back
        metrics["step_graph"] = "captured" if step.failure is None else f"eager: {step.failure}"
    if evaluate_test:
        metrics["test_accuracy"] = evaluate(student, test_dl)
    return metrics


def _keyed(group: str, values: dict[str, torch.Tensor]) -> dict[tuple[str, str], torch.Tensor]:
    return {(group, k): v for k, v in values.items()}


class _Means:
    """Per-key running sums of a step's device scalars, read once (one host sync) at the end of an
    epoch. A step's scalars are stacked and added as one vector: two ops a step instead of one
    per key (about 14 in mode full), which matters where the step itself is one CUDA graph and
    every op outside it is a launch of its own. Keys may change between steps (the adversarial
    terms join after their warm-up): one running vector per set of keys."""

    def __init__(self):
        self.sums: dict[tuple, torch.Tensor] = {}
        self.counts: dict[tuple, int] = {}

    def add(self, values: dict) -> None:
        if not values:
            return
        keys = tuple(values)
        stacked = torch.stack([v.float() for v in values.values()])
        self.sums[keys] = stacked if keys not in self.sums else self.sums[keys] + stacked
        self.counts[keys] = self.counts.get(keys, 0) + 1

    def means(self) -> dict:
        totals: dict = {}
        counts: dict = {}
        for keys, vector in self.sums.items():
            for k, v in zip(keys, vector.tolist(), strict=True):
                totals[k] = totals.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + self.counts[keys]
        return {k: totals[k] / counts[k] for k in totals}

    def means_by_group(self, groups: tuple[str, ...]) -> dict[str, dict[str, float]]:
        """{group: {key: mean}} for keys of the form (group, key); every group present, maybe empty."""
        out: dict[str, dict[str, float]] = {g: {} for g in groups}
        for (group, key), mean in self.means().items():
            out[group][key] = mean
        return out


def _describe_discriminators(record: dict) -> str:
    """', discriminator accuracy feat 0.71 logit 0.64 (class 0.83), gate ...' or ''."""
    acc, gate = record["disc_accuracy"], record["adv_gate"]
    if not acc:
        return ""
    names = {"adv_feat": "feat", "adv_logit": "logit", "adv_logit_class": "logit-class"}
    text = ", discriminator accuracy " + " ".join(f"{names[k]} {v:.2f}" for k, v in acc.items())
    if gate:
        text += ", gates " + " ".join(f"{names[k]} {v:.2f}" for k, v in gate.items())
    return text
