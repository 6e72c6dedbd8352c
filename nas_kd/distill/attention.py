"""KSANC's task-driven attention squeeze: each stage map -> a C-value descriptor.

For the maps L_1..L_k of one network (all with the teacher's channel counts: student maps come
through the adapters): a global descriptor g = avgpool(1×1 conv(L_k)) of ``GLOBAL_DIM`` values
is projected by a linear layer to each stage's C channels and broadcast-added, L' = L + P(g);
a 1×1 conv scores each position of L', a softmax over the H·W positions makes the attention
map M, and the descriptor is Σ_p M_p · L'_p (C values).

Computed without building L': the score conv is linear, so its response to the broadcast P(g)
is one constant per image, which a softmax over positions ignores; and the weights M sum to 1.
Hence M = softmax(conv(L)) and Σ_p M_p · L'_p = Σ_p M_p · L_p + P(g) — the same numbers as the
literal recipe, without an N×C×H×W temporary forward and backward (the 28×28 stage of an mbv2
student made that ~30% of a KD step on the CPU). It also shows what the paper's form implies:
g shifts the descriptor but cannot steer where the attention looks. We keep the paper's form.

Task-driven on both sides, one function for both (how is our choice; KSANC leaves it open)
-------------------------------------------------------------------------------------------
`TeacherAttention` is a squeeze plus one linear classifier per stage (`TaskHeads`). It is fitted
once on the frozen teacher by cross-entropy on the labels (`nas_kd.distill.attention_fit`), then
frozen, and the *same* frozen squeeze summarises the teacher's maps and the adapted student maps
(which have the teacher's channels). So the attention is task-driven on both sides, the L_is
target cannot drift, and L_is compares features under one yardstick, not two attention modules.
KSANC gives each network its own attention. A student-side attention trained by L_is alone is
not task-driven (it may look wherever matching is easiest); our first version gave it its own
task loss on detached maps, which needed a second squeeze pass per step. A frozen shared squeeze
needs neither.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_kd.distill import losses

__all__ = ["GLOBAL_DIM", "AttentionSqueeze", "TaskHeads", "TeacherAttention", "attention_pool"]

GLOBAL_DIM = 128  # KSANC's example width of the global descriptor g


def attention_pool(features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features and (N, [1,] H, W) scores -> (N, C): softmax(scores over H·W)-weighted mean."""
    weights = torch.softmax(scores.flatten(1).float(), dim=1)
    return torch.einsum("ncp,np->nc", features.flatten(2).float(), weights)


class AttentionSqueeze(nn.Module):
    """One network's attention modules for stages with ``channels`` (shallow to deep)."""

    def __init__(self, channels: Sequence[int], global_dim: int = GLOBAL_DIM):
        super().__init__()
        self.global_conv = nn.Conv2d(channels[-1], global_dim, 1)
        self.project = nn.ModuleList(nn.Linear(global_dim, c) for c in channels)
        self.score = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in channels)
        # Each stage's maps are divided by the root mean square of the teacher's maps it was
        # fitted on (`fit_teacher_attention` sets it; nas_kd.distill.map_scale): the fit, and so
        # the descriptors, are then the same for a teacher whatever the scale of its maps.
        self.register_buffer("stage_scale", torch.ones(len(channels)))

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        maps = [m / self.stage_scale[j] for j, m in enumerate(maps)]  # a 0-d divisor keeps m's dtype
        # avgpool(conv1x1(L)) = conv1x1(avgpool(L)) (both linear): pooling first costs H·W times less.
        g = F.linear(maps[-1].float().mean((2, 3)), self.global_conv.weight.flatten(1), self.global_conv.bias)
        descriptors = []
        for stage_map, project, score in zip(maps, self.project, self.score, strict=True):
            # The one-channel 1×1 score conv as multiply-and-sum: on the CPU the squeeze's forward
            # and backward took 36 ms instead of 49 ms with the conv (three ResNet-20 stages, batch 128).
            scores = (stage_map * score.weight.view(1, -1, 1, 1).to(stage_map.dtype)).sum(1) + score.bias.to(stage_map.dtype)
            # = attention_pool(L', score(L')) with L' = L + P(g): see the module docstring.
            descriptors.append(attention_pool(stage_map, scores) + project(g).float())
        return descriptors


class TaskHeads(nn.Module):
    """Per-stage linear classifiers on descriptors: what makes an attention squeeze task-driven."""

    def __init__(self, channels: Sequence[int], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(c, num_classes) for c in channels)

    def forward(self, descriptors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [head(d) for head, d in zip(self.heads, descriptors, strict=True)]


class TeacherAttention(nn.Module):
    """A squeeze and its task heads over every stage of one teacher (``channels``)."""

    def __init__(self, channels: Sequence[int], num_classes: int):
        super().__init__()
        self.channels, self.num_classes = tuple(channels), num_classes
        self.squeeze = AttentionSqueeze(channels)
        self.heads = TaskHeads(channels, num_classes)

    def subset(self, stages: Sequence[int]) -> TeacherAttention:
        """An independent copy restricted to ``stages`` (teacher stage indices, shallow to deep,
        ending with the deepest: g is computed from the last map given)."""
        if not stages or stages[-1] != len(self.channels) - 1:
            raise ValueError(f"stages {list(stages)} must end with the deepest stage {len(self.channels) - 1}")
        out = TeacherAttention([self.channels[j] for j in stages], self.num_classes)
        out.squeeze.global_conv = copy.deepcopy(self.squeeze.global_conv)
        out.squeeze.project = nn.ModuleList(copy.deepcopy(self.squeeze.project[j]) for j in stages)
        out.squeeze.score = nn.ModuleList(copy.deepcopy(self.squeeze.score[j]) for j in stages)
        out.squeeze.stage_scale = self.squeeze.stage_scale[list(stages)].clone()
        out.heads.heads = nn.ModuleList(copy.deepcopy(self.heads.heads[j]) for j in stages)
        return out

    def task_loss(self, descriptors: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Mean over stages of the heads' cross-entropy with the labels."""
        return torch.stack([losses.cross_entropy(c, labels) for c in self.heads(descriptors)]).mean()
