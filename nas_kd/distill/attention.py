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

Task-driven on both sides (how is our choice; KSANC leaves it open)
-------------------------------------------------------------------
`TeacherAttention` is a squeeze plus one linear classifier per stage (`TaskHeads`). The teacher's
is fitted once on the frozen teacher by cross-entropy on the labels (`nas_kd.distill.attention_fit`)
and then frozen, so the L_is target cannot drift during distillation and every distillation run
with that teacher reuses it. The student's starts as a copy of the teacher's (restricted to the
paired stages) and keeps learning from two signals: L_is, and the same task cross-entropy through
its own heads on its descriptors (on *detached* adapted maps, so that signal shapes where the
student's attention looks, not the student's backbone).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from nas_kd.distill import losses

__all__ = ["GLOBAL_DIM", "AttentionSqueeze", "TaskHeads", "TeacherAttention", "attention_pool"]

GLOBAL_DIM = 128  # KSANC's example width of the global descriptor g


def attention_pool(features: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features and (N, 1, H, W) scores -> (N, C): softmax(scores over H·W)-weighted mean."""
    weights = torch.softmax(scores.flatten(1).float(), dim=1)
    return torch.einsum("ncp,np->nc", features.flatten(2).float(), weights)


class AttentionSqueeze(nn.Module):
    """One network's attention modules for stages with ``channels`` (shallow to deep)."""

    def __init__(self, channels: Sequence[int], global_dim: int = GLOBAL_DIM):
        super().__init__()
        self.global_conv = nn.Conv2d(channels[-1], global_dim, 1)
        self.project = nn.ModuleList(nn.Linear(global_dim, c) for c in channels)
        self.score = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        g = self.global_conv(maps[-1]).mean((2, 3))
        descriptors = []
        for stage_map, project, score in zip(maps, self.project, self.score, strict=True):
            # = attention_pool(L', score(L')) with L' = L + P(g): see the module docstring.
            descriptors.append(attention_pool(stage_map, score(stage_map)) + project(g).float())
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
        out.heads.heads = nn.ModuleList(copy.deepcopy(self.heads.heads[j]) for j in stages)
        return out

    def task_loss(self, descriptors: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Mean over stages of the heads' cross-entropy with the labels."""
        return torch.stack([losses.cross_entropy(c, labels) for c in self.heads(descriptors)]).mean()
