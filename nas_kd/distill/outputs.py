"""What the frozen teacher contributes to one batch, and how it is computed live.

`TeacherOutputs` comes either from `teacher_outputs` (a live pass, used where random crops make
caching impossible) or from `nas_kd.distill.cache.TeacherCache.lookup`; the losses cannot tell
which. A test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nas_kd.device import autocast

__all__ = ["TeacherOutputs", "teacher_outputs"]


@dataclass(frozen=True)
class TeacherOutputs:
    """The teacher's answer for one batch."""

    logits: torch.Tensor  # (N, classes), float32
    maps: list[torch.Tensor]  # stage maps of the paired stages in pair order (first map_samples images); empty when no loss reads maps
    descriptors: list[torch.Tensor]  # frozen attention's descriptors of the paired stages (``desc`` only; first map_samples images)


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: torch.Tensor, map_stages: Sequence[int], attention: nn.Module | None, desc_stages: Sequence[int], samples: int | None = None) -> TeacherOutputs:
    """One live pass of the frozen teacher: logits for the whole batch, maps and descriptors for
    its first ``samples`` images (all when None; see `Mode.map_samples`).

    ``attention`` is the frozen `TeacherAttention` restricted to ``desc_stages``. ``no_grad``
    rather than ``inference_mode``: the loss graphs save these tensors for backward, which
    inference tensors forbid.
    """
    with autocast(x.device):
        if not map_stages and attention is None:
            return TeacherOutputs(teacher(x).float(), [], [])
        maps, logits = teacher.forward_stages(x)
        maps = [m[:samples] for m in maps]
        descriptors = attention.squeeze([maps[j] for j in desc_stages]) if attention is not None else []
    return TeacherOutputs(logits.float(), [maps[j].float() for j in map_stages], descriptors)
