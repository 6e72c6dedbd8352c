"""`train_teacher`: one flat loop that trains a teacher once (cross-entropy, plus the
reconstruction MSE when the teacher has a decoder); `nas_kd.models.teachers` caches the result."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from nas_kd.config import Schedule
from nas_kd.data import Splits
from nas_kd.device import autocast, memory_format, seed_everything

__all__ = ["train_teacher"]


def train_teacher(
    model: nn.Module,
    splits: Splits,
    schedule: Schedule,
    *,
    device: torch.device,
    seed: int = 0,
    recon_weight: float = 1.0,
    show_progress: bool | None = None,
    log=print,
) -> dict:
    """Cross-entropy (+ reconstruction MSE when the model has a decoder); returns metrics.

    One flat loop: device-resident batches, SGD + warm-up/cosine per step, bf16 autocast and
    channels_last on the GPU. Validation accuracy is logged per epoch; test accuracy once at the end.
    """
    from nas_kd.train import build_optimizer, build_scheduler, check_finite, evaluate, make_loaders, progress

    seed_everything(seed)
    model.to(device, memory_format=memory_format(device)).train()
    train_dl, val_dl, test_dl = make_loaders(splits, batch_size=schedule.batch_size, device=device, seed=seed, crop=schedule.crop)
    opt = build_optimizer(model.named_parameters(), schedule)
    sched = build_scheduler(opt, schedule, len(train_dl))
    decoder = getattr(model, "decoder", None)
    history, t0, seen = [], time.perf_counter(), 0
    for epoch in range(schedule.epochs):
        for x, y in progress(train_dl, total=len(train_dl), desc=f"teacher epoch {epoch + 1}/{schedule.epochs}", enabled=show_progress):
            with autocast(device):
                if decoder is not None:
                    maps, logits = model.forward_stages(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=schedule.label_smoothing)
                    loss = loss + recon_weight * F.mse_loss(decoder(maps[-1]).float(), x)
                else:
                    loss = F.cross_entropy(model(x), y, label_smoothing=schedule.label_smoothing)
            check_finite(loss, "teacher loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        val_acc = evaluate(model, val_dl)
        history.append({"epoch": epoch + 1, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0})
        log(f"teacher epoch {epoch + 1}/{schedule.epochs}: val accuracy {val_acc:.4f} ({time.perf_counter() - t0:.1f}s)")
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    return {
        "val_accuracy": history[-1]["val_accuracy"],
        "test_accuracy": evaluate(model, test_dl),
        "train_seconds": train_seconds,
        "images_per_second": seen / max(train_seconds, 1e-9),
        "history": history,
    }
