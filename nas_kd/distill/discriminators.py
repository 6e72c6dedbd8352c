"""The two discriminators: one on feature maps (KTAN; Zhang et al.'s spatial level), one on
logits with an auxiliary classifier (Xu et al.; KSANC).

Feature-map discriminator (architecture is our choice; neither paper publishes one)
----------------------------------------------------------------------------------
A PatchGAN-style stack: 3×3 conv stride 2 -> LeakyReLU(0.2) -> 3×3 conv -> LeakyReLU(0.2) ->
1×1 conv to one score *per position*. A score per position judges local spatial structure,
which is the point of KTAN's adversarial term (a plain L2 loss ignores spatial correlation).
No normalisation layers, so the student's step can show it student maps alone. Width 32:
on the deepest 7×7×64 map of a ResNet-20 it costs about 0.4M MACs per image, small next to the
teacher's forward pass.

Logit discriminator (Xu et al.)
-------------------------------
Input BN over the C logits, then ``depth`` (3) residual FC layers of width C with BN, ReLU and
dropout 0.3, then a linear layer to 1 + C outputs: one real/fake logit (for BCE; Xu et al. use a
2-way softmax, equivalent) and C class scores for the auxiliary classifier.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureDiscriminator", "LogitDiscriminator"]


class FeatureDiscriminator(nn.Module):
    """(N, C, H, W) map -> (N, ceil(H/2), ceil(W/2)) real/fake logits."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


class _ResidualFC(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LogitDiscriminator(nn.Module):
    """(N, C) logits -> ((N,) real/fake logit, (N, C) class scores)."""

    def __init__(self, num_classes: int, depth: int = 3, dropout: float = 0.3):
        super().__init__()
        self.input_bn = nn.BatchNorm1d(num_classes)
        self.blocks = nn.Sequential(*(_ResidualFC(num_classes, dropout) for _ in range(depth)))
        self.out = nn.Linear(num_classes, 1 + num_classes)

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.out(self.blocks(self.input_bn(logits.float())))
        return out[:, 0], out[:, 1:]
