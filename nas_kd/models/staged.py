"""The interface every teacher and student shares: stage feature maps plus logits.

Intermediate supervision (KTAN, KSANC, Zhang et al.) taps the output of each *stage* (a run of
blocks at one resolution). A `StagedNet` therefore exposes:

- ``stage_channels``: the channel count of each stage's output map, shallow to deep;
- ``forward_stages(x) -> (maps, logits)``: the list of stage maps (N, C_i, H_i, W_i) and the
  logits (N, num_classes);
- ``forward(x) -> logits``: plain classification, what exporters and evaluation use.

Subclasses implement ``stem``, ``stages`` (an ``nn.ModuleList``) and ``head`` and get the rest.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["StagedNet", "ClassifierHead"]


class ClassifierHead(nn.Module):
    """Global average pool, optional dropout, then one linear layer."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class StagedNet(nn.Module):
    """stem -> stages[0] -> ... -> stages[-1] -> head, with every stage output reachable."""

    stem: nn.Module
    stages: nn.ModuleList
    head: nn.Module
    stage_channels: tuple[int, ...]
    num_classes: int

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps, self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)
