"""Building blocks of students: conv-BN-activation, squeeze-excitation, inverted residual, basic.

Every convolution pads by ``kernel // 2`` (kernels are odd), so a stride-s layer maps an H-pixel
side to ``ceil(H / s)`` pixels and never below 1: any input down to 1x1 passes through any stack.
Convolutions followed by batch norm carry no bias (BN's shift replaces it and folds at export).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "BLOCK_TYPES",
    "ConvBNAct",
    "SqueezeExcite",
    "InvertedResidual",
    "BasicBlock",
    "activation_for",
    "se_channels",
    "out_size",
    "make_block",
]

# Block type name -> short tag used in `StudentConfig.describe()`.
BLOCK_TYPES: dict[str, str] = {"inverted_residual": "ir", "basic": "res"}

# Squeeze-excitation bottleneck: a quarter of the channels (as in MobileNetV3 / SENet r=4), but
# at least 8 so that narrow students keep a usable gate.
SE_REDUCTION = 4
SE_MIN_CHANNELS = 8


def se_channels(channels: int) -> int:
    """Width of the squeeze-excitation bottleneck for a ``channels``-wide map."""
    return max(SE_MIN_CHANNELS, channels // SE_REDUCTION)


def out_size(size: int, stride: int) -> int:
    """Side length after a padded, odd-kernel conv of this stride: ceil(size / stride)."""
    return (size - 1) // stride + 1


def activation_for(block: str) -> type[nn.Module]:
    """ReLU6 for MobileNetV2-style blocks (bounded, as in the paper), ReLU for ResNet blocks."""
    return nn.ReLU6 if block == "inverted_residual" else nn.ReLU


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> optional activation; ``act=None`` for a linear output."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            # In place saves memory for ReLU, whose backward reads its output; ReLU6's backward
            # reads its input, so in place autograd copies the input first: one more kernel and
            # no memory saved (8 copies per training step of a 0.5M-MAC mbv2 student).
            layers.append(act(inplace=act is not nn.ReLU6))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gate: global pool -> 1x1 conv down -> ReLU -> 1x1 conv up -> sigmoid -> scale."""

    def __init__(self, channels: int):
        super().__init__()
        squeeze = se_channels(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (skipped when expand == 1) -> depthwise kxk (stride) ->
    optional SE on the expanded map -> linear 1x1 projection; identity shortcut when the shape
    is unchanged."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, kernel: int = 3, expand: int = 1, se: bool = False
    ):
        super().__init__()
        act = activation_for("inverted_residual")
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBNAct(hidden, out_ch, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class BasicBlock(nn.Module):
    """ResNet basic block: kxk conv (stride) -> kxk conv -> optional SE, plus a shortcut (identity,
    or a strided 1x1 conv-BN projection when the shape changes), then ReLU."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, kernel: int = 3, expand: int = 1, se: bool = False
    ):
        super().__init__()
        if expand != 1:
            raise ValueError(f"basic blocks have no expansion, got expand={expand}")
        act = activation_for("basic")
        layers: list[nn.Module] = [
            ConvBNAct(in_ch, out_ch, kernel, stride, act=act),
            ConvBNAct(out_ch, out_ch, kernel, act=None),
        ]
        if se:
            layers.append(SqueezeExcite(out_ch))
        self.body = nn.Sequential(*layers)
        projection = stride != 1 or in_ch != out_ch
        self.shortcut = ConvBNAct(in_ch, out_ch, 1, stride, act=None) if projection else nn.Identity()
        self.act = act(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


_BLOCKS: dict[str, type[nn.Module]] = {"inverted_residual": InvertedResidual, "basic": BasicBlock}


def make_block(
    block: str, in_ch: int, out_ch: int, stride: int, kernel: int = 3, expand: int = 1, se: bool = False
) -> nn.Module:
    """One block of the named type (a key of `BLOCK_TYPES`)."""
    if block not in _BLOCKS:
        raise ValueError(f"unknown block type '{block}': choose one of {', '.join(sorted(_BLOCKS))}")
    return _BLOCKS[block](in_ch, out_ch, stride, kernel=kernel, expand=expand, se=se)
