"""Distiller steps per mode and their interleaved timing, shared by `bench.step_time` and the
step-time section of `bench.distill_ablation` (CPU and GPU)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch

from nas_kd.distill import get_mode
from nas_kd.distill.map_scale import teacher_map_scales
from nas_kd.distill.trainer import build_step
from nas_kd.models.student import build_student

__all__ = ["mode_steps", "interleaved_times"]


def mode_steps(cfg, teachers: dict[bool, torch.nn.Module], caches: dict, modes: Iterable[str], schedule, info, steps_per_epoch: int, device, loader=None) -> dict[str, Callable]:
    """One fresh student per mode (same initial weights), each with its own distillation step;
    ``teachers[needs_reconstruction]`` and ``caches[mode]`` (absent: the live teacher) feed it;
    ``loader`` (the training `DeviceLoader`) measures the teacher's map scales as the trainer does."""
    steps = {}
    for mode in modes:
        torch.manual_seed(0)
        cache, recipe = caches.get(mode), get_mode(mode)
        steps[mode] = build_step(
            build_student(cfg, info.channels, info.num_classes),
            teachers[recipe.needs_reconstruction],
            recipe,
            schedule,
            input_shape=info.input_shape,
            num_classes=info.num_classes,
            steps_per_epoch=steps_per_epoch,
            device=device,
            cache=cache,
            teacher_attention=cache.attention_state if cache else None,
            map_scales=teacher_map_scales(teachers[recipe.needs_reconstruction], loader) if loader is not None and recipe.uses_maps else None,
        )
    return steps


def interleaved_times(steps: dict[str, Callable], batches: list, device, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per step for each mode over ``batches`` (the first ``warmup`` untimed: allocator,
    oneDNN/cuDNN kernel choice), modes interleaved so that drifting load hits all alike. CPU:
    process time (other processes' load barely inflates it); GPU: synchronised wall time."""
    cuda = device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    times: dict[str, list[float]] = {m: [] for m in steps}
    for i, b in enumerate(batches):
        for mode, step in steps.items():
            if cuda:
                torch.cuda.synchronize(device)
            t0 = clock()
            step(b.x, b.y, index=b.index, flipped=b.flipped)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times[mode].append(clock() - t0)
    return times
