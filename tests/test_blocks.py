"""Blocks: shapes, shortcuts, and exact MACs against hand-written formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_kd.cost import count_macs
from nas_kd.models.blocks import (
    BasicBlock,
    ConvBNAct,
    InvertedResidual,
    SqueezeExcite,
    make_block,
    out_size,
    se_channels,
)


def macs(module: nn.Module, c: int, h: int, w: int) -> int:
    return count_macs(module.eval(), torch.zeros(1, c, h, w))[0]


def test_inverted_residual_macs_expand_se_stride2():
    # 16 -> 24 channels, 8x8 input, stride 2 (4x4 output), 5x5 depthwise, expand 6 (hidden 96), SE.
    block = InvertedResidual(16, 24, stride=2, kernel=5, expand=6, se=True)
    expand = 16 * 96 * 8 * 8  # 1x1 conv at input resolution
    depthwise = 96 * 5 * 5 * 4 * 4  # one 5x5 filter per channel
    se = 96 * 24 + 24 * 96  # two 1x1 convs on a 1x1 map, bottleneck 96 // 4 = 24
    project = 96 * 24 * 4 * 4
    assert macs(block, 16, 8, 8) == expand + depthwise + se + project
    assert not block.residual


def test_inverted_residual_macs_no_expansion_residual():
    block = InvertedResidual(16, 16, stride=1, kernel=3, expand=1)
    assert macs(block, 16, 8, 8) == 16 * 9 * 64 + 16 * 16 * 64
    assert block.residual
    assert len(block.body) == 2  # no 1x1 expansion when expand == 1


def test_basic_block_macs_projection():
    block = BasicBlock(8, 16, stride=2, kernel=3)
    conv1, conv2, shortcut = 8 * 16 * 9 * 16, 16 * 16 * 9 * 16, 8 * 16 * 16
    assert macs(block, 8, 8, 8) == conv1 + conv2 + shortcut
    assert isinstance(block.shortcut, ConvBNAct)


def test_basic_block_macs_identity_se_kernel5():
    block = BasicBlock(16, 16, stride=1, kernel=5, se=True)
    assert macs(block, 16, 7, 7) == 2 * 16 * 16 * 25 * 49 + 2 * 16 * 8  # SE bottleneck max(8, 4) = 8
    assert isinstance(block.shortcut, nn.Identity)


def test_se_channels_floor_and_ratio():
    assert [se_channels(c) for c in (8, 16, 32, 64, 96)] == [8, 8, 8, 16, 24]


def test_squeeze_excite_keeps_shape_and_gates():
    se = SqueezeExcite(16)
    x = torch.randn(2, 16, 5, 5)
    y = se(x)
    assert y.shape == x.shape
    ratio = y / x
    assert ratio.min() > 0 and ratio.max() < 1  # a sigmoid gate per (image, channel)


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_out_size_matches_padded_conv(kernel, stride):
    for size in range(1, 20):
        conv = nn.Conv2d(1, 1, kernel, stride, kernel // 2)
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == out_size(size, stride)


@pytest.mark.parametrize("block", ["inverted_residual", "basic"])
def test_blocks_accept_1x1_maps(block):
    b = make_block(block, 8, 16, stride=2, kernel=5, se=True).eval()
    assert b(torch.randn(2, 8, 1, 1)).shape == (2, 16, 1, 1)


def test_make_block_rejects_unknown_type_and_basic_expansion():
    with pytest.raises(ValueError, match="unknown block type 'dense'"):
        make_block("dense", 8, 8, 1)
    with pytest.raises(ValueError, match="basic blocks have no expansion"):
        make_block("basic", 8, 8, 1, expand=6)


def test_activations_per_block_type():
    ir = InvertedResidual(8, 8, 1, expand=2)
    basic = BasicBlock(8, 8, 1)
    assert any(isinstance(m, nn.ReLU6) for m in ir.modules())
    assert not any(isinstance(m, nn.ReLU6) for m in basic.modules())


def test_relu6_is_not_in_place_where_that_would_cost_a_copy():
    """In-place ReLU6 makes autograd copy its input (its backward reads the input it would
    overwrite): one more kernel per activation in every training step, no memory saved."""
    from bench.step_ops import ops_dispatched

    block = ConvBNAct(4, 4, act=nn.ReLU6)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert "clone" not in ops_dispatched(lambda: block(x).sum().backward())
    assert isinstance(block[-1], nn.ReLU6) and not block[-1].inplace
    assert ConvBNAct(4, 4, act=nn.ReLU)[-1].inplace  # ReLU's backward reads its output: in place is free


def _zero_last_bn(block: nn.Module) -> None:
    """Make the block's body output exactly zero (its last BN's scale and shift), in eval mode."""
    bn = [m for m in block.body.modules() if isinstance(m, nn.BatchNorm2d)][-1]
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()


def test_an_inverted_residual_with_an_unchanged_shape_adds_its_input():
    torch.manual_seed(0)
    block = InvertedResidual(8, 8, 1, expand=3).eval()
    x = torch.randn(2, 8, 6, 6)
    _zero_last_bn(block)
    assert torch.equal(block(x), x)  # a body that outputs nothing leaves the identity


def test_an_inverted_residuals_projection_is_linear():
    """MobileNetV2's linear bottleneck: no activation after the 1x1 projection, so its output
    keeps negative values (a ReLU there would destroy information in the narrow map)."""
    torch.manual_seed(0)
    block = InvertedResidual(8, 12, 2, expand=3).eval()
    assert (block(torch.randn(2, 8, 6, 6)) < 0).any()


def test_a_basic_block_adds_its_shortcut_then_applies_relu():
    torch.manual_seed(0)
    block = BasicBlock(8, 8, 1).eval()
    x = torch.randn(2, 8, 6, 6)
    _zero_last_bn(block)
    assert torch.equal(block(x), torch.relu(x))
