"""Teacher-to-student adapters (KTAN's T2S layer, KSANC's channel transform) and stage pairing.

Pairing rule (our choice; the papers match networks with equal stage counts)
----------------------------------------------------------------------------
Students and teachers may have different numbers of stages at different resolutions (an mbv2
student on 28×28 has five stages at 28, 14, 7, 4, 4 px; a CIFAR ResNet teacher three at 28, 14,
7 px). Walking from the deep end:

1. the deepest student stage pairs with the deepest teacher stage, whatever their sizes: these
   are the maps the classifiers read, the "high-level" features KTAN transfers;
2. every shallower teacher stage pairs with the deepest *still shallower* student stage of the
   same spatial size, or, where none has it, the one closest in size (log scale; deeper wins ties);
3. pairing stops when either network runs out of stages.

So the example pairs student stages (0, 1, 4) with teacher stages (0, 1, 2); student stages 2
and 3 are left unsupervised. Equal stage layouts pair one to one.

Resizing
--------
Where the paired maps differ in size the student map is brought to the teacher's: *area*
pooling (``adaptive_avg_pool2d``) when it is larger, which averages instead of aliasing, and
*bilinear* interpolation when it is smaller. The 1×1 conv + BN runs at the smaller of the two
resolutions (pool first, upsample last): the same result up to BN statistics, at less cost.
The deepest adapted map is also kept at that coarser resolution, before any upsampling
(`Adapted.coarse`): the feature discriminator judges it against the teacher's map area-pooled to
the same size, because an upsampled student map gives itself away by its smoothness, a cue the
student cannot remove and that says nothing about its features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas_kd.device import memory_format
from nas_kd.models.batch_counters import without_batch_counters

__all__ = ["Adapted", "StageAdapter", "StageAdapters", "pair_stages", "stage_sizes", "pool_to"]

Size = tuple[int, int]


def stage_sizes(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device | str = "cpu") -> list[Size]:
    """Spatial size (H, W) of each stage map for one input, from a probe pass in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        maps, _ = model.forward_stages(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return [tuple(m.shape[-2:]) for m in maps]


def pair_stages(student_sizes: Sequence[Size], teacher_sizes: Sequence[Size]) -> list[tuple[int, int]]:
    """(student stage, teacher stage) pairs, shallow to deep, by the rule in the module docstring."""
    if not student_sizes or not teacher_sizes:
        return []
    pairs = [(len(student_sizes) - 1, len(teacher_sizes) - 1)]
    for j in range(len(teacher_sizes) - 2, -1, -1):
        candidates = range(pairs[-1][0])
        if not candidates:
            break
        pairs.append((min(candidates, key=lambda i, j=j: _size_distance(student_sizes[i], teacher_sizes[j], i)), j))
    return pairs[::-1]


def _size_distance(student: Size, teacher: Size, student_index: int) -> tuple[float, int]:
    """Log-scale size mismatch; on ties the deeper student stage wins."""
    return abs(math.log(student[0] / teacher[0])) + abs(math.log(student[1] / teacher[1])), -student_index


def pool_to(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Area-pool ``x`` down to ``size`` where it is larger (each dimension separately)."""
    h, w = x.shape[-2:]
    if h > size[0] or w > size[1]:
        x = F.adaptive_avg_pool2d(x, (min(h, size[0]), min(w, size[1])))
    return x


@dataclass(frozen=True)
class Adapted:
    """The adapted student maps of one batch."""

    maps: list[torch.Tensor]  # one per pair, shallow to deep, at the teacher's sizes
    coarse: torch.Tensor | None  # the deepest, at the coarser of the student's and teacher's sizes
    # What `feature_view` worked out from ``coarse``'s values, shared with the detached copy (the
    # same values): the discriminators' update and the student's adversarial term view it alike.
    view_memo: dict = field(default_factory=dict, compare=False, repr=False)

    def detach(self) -> Adapted:
        return Adapted([m.detach() for m in self.maps], None if self.coarse is None else self.coarse.detach(), self.view_memo)


NONE = Adapted([], None)


class _Relayout(torch.autograd.Function):
    """The first ``samples`` images of ``x`` in memory layout ``fmt``, with the gradient handed back
    in ``x``'s own layout (zero for the other images).

    Student maps may leave oneDNN in channels_last on the CPU while the losses send gradients back
    contiguous. BN's backward on mixed layouts is slow: 60 ms instead of 7 ms for the adapter's
    128×16×28×28 map, and a contiguous gradient handed back to a channels_last student map made
    the *student's* own BN backward ~4x slower too. So the adapter works in the device's layout
    and the student gets its gradient in the layout it produced (a plain slice's backward would
    hand it back contiguous).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, fmt: torch.memory_format, samples: int | None) -> torch.Tensor:
        ctx.fmt = torch.channels_last if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        ctx.shape, ctx.samples = x.shape, samples
        return x[:samples].contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.samples is None or ctx.samples >= ctx.shape[0]:
            return grad.contiguous(memory_format=ctx.fmt), None, None
        full = grad.new_zeros(ctx.shape).contiguous(memory_format=ctx.fmt)
        full[: ctx.samples] = grad
        return full, None, None


class StageAdapter(nn.Module):
    """Student map (N, C_s, h, w) -> (N, C_t, H, W): 1×1 conv + BN, resized to the teacher's size."""

    def __init__(self, student_channels: int, teacher_channels: int, scale: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)
        # The paired teacher map's root mean square (nas_kd.distill.map_scale): BN's output is at
        # about 1, the teacher's maps at whatever scale it has; scaled, the adapted map is in
        # the teacher's units, which its decoder and attention were fitted in.
        self.scale = float(scale)

    def coarse(self, x: torch.Tensor, size: Size, samples: int | None = None) -> torch.Tensor:
        """Conv + BN (times ``scale``) at the coarser of the two resolutions (the student map
        area-pooled first where it is larger than ``size``), for the first ``samples`` images (all
        when None)."""
        out = self.bn(self.conv(pool_to(_Relayout.apply(x, memory_format(x.device), samples), size)))
        return out if self.scale == 1.0 else out * self.scale

    def forward(self, x: torch.Tensor, size: Size, samples: int | None = None) -> torch.Tensor:
        return upsample_to(self.coarse(x, size, samples), size)


def upsample_to(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Bilinear interpolation to ``size`` where ``x`` differs from it."""
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


class StageAdapters(nn.Module):
    """One adapter per (student stage, teacher stage) pair; ``teacher_sizes`` are the paired
    teacher maps' (H, W), the adapters' output sizes; ``teacher_scales`` (per teacher stage, all 1
    when None) the teacher maps' root mean squares (`StageAdapter`)."""

    def __init__(
        self,
        pairs: Sequence[tuple[int, int]],
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        teacher_sizes: Sequence[Size],
        teacher_scales: Sequence[float] | None = None,
    ):
        super().__init__()
        self.pairs = list(pairs)
        self.sizes = [tuple(teacher_sizes[j]) for _, j in self.pairs]
        self.adapters = nn.ModuleList(StageAdapter(student_channels[i], teacher_channels[j], 1.0 if teacher_scales is None else teacher_scales[j]) for i, j in self.pairs)
        without_batch_counters(self)  # trained every step: no BN counter launches (nas_kd.models.batch_counters)

    @property
    def scales(self) -> list[float]:
        """Each pair's teacher map scale, shallow to deep (`StageAdapter.scale`)."""
        return [a.scale for a in self.adapters]

    def forward(self, student_maps: Sequence[torch.Tensor], samples: int | None = None) -> Adapted:
        """The paired maps of the first ``samples`` images (all when None), adapted."""
        coarse = [adapter.coarse(student_maps[i], size, samples) for adapter, (i, _), size in zip(self.adapters, self.pairs, self.sizes, strict=True)]
        return Adapted([upsample_to(c, size) for c, size in zip(coarse, self.sizes, strict=True)], coarse[-1])
