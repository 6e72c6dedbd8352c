"""The teacher architectures against their papers, block by block (nas_kd.models.teacher_nets)."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_kd.errors import UserError
from nas_kd.models import teacher_nets as N


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "arch, millions",
    [
        # He et al. 2016, Table 6 (CIFAR-10): 0.27M, 0.85M, 1.7M. Their shortcuts are parameter-free
        # (option A); ours are 1x1 conv + BN where the shape changes (option B), counted apart.
        ("resnet20", 0.27),
        ("resnet56", 0.85),
        ("resnet110", 1.7),
        # Zagoruyko & Komodakis 2016, Table 4 / 9 (CIFAR-10): 2.7M, 8.9M, 11.0M, 36.5M.
        ("wrn-16-4", 2.7),
        ("wrn-40-4", 8.9),
        ("wrn-16-8", 11.0),
        ("wrn-28-10", 36.5),
    ],
)
def test_cifar_teachers_have_their_papers_parameter_counts(arch, millions):
    net = N.build_teacher(arch, 3, 10)
    projections = sum(_params(m.shortcut) for m in net.modules() if isinstance(m, N._BasicBlock))
    assert (projections > 0) == arch.startswith("resnet")
    assert round((_params(net) - projections) / 1e6, 2 if millions < 1 else 1) == millions, (_params(net), projections)


@pytest.mark.parametrize("arch, stage_channels", [("resnet20", (16, 32, 64)), ("resnet20x2", (32, 64, 128)), ("wrn-16-4", (64, 128, 256)), ("wrn-10-1", (16, 32, 64))])
def test_stage_maps_halve_the_side_after_the_first_stage(arch, stage_channels):
    net = N.build_teacher(arch, 1, 10)
    maps, _ = net.forward_stages(torch.randn(2, 1, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, side, side) for c, side in zip(stage_channels, (32, 16, 8), strict=True)]


def test_the_last_wide_resnet_stage_ends_activated():
    """The distiller taps each stage's output: like every other stage's (a block's sum, which
    the next pre-activation block normalises), the last one is taken after its final BN-ReLU."""
    net = N.build_teacher("wrn-10-1", 1, 10).train()
    maps, _ = net.forward_stages(torch.randn(8, 1, 16, 16))
    assert (maps[-1] >= 0).all() and (maps[-1] > 0).any() and (maps[0] < 0).any() and (maps[1] < 0).any()


def _reference_basic_block(block, x):
    """He et al.'s basic block: relu(BN(conv(relu(BN(conv(x))))) + shortcut(x))."""
    (conv1, bn1), _, (conv2, bn2) = block.body
    return F.relu(bn2(conv2(F.relu(bn1(conv1(x))))) + block.shortcut(x))


def _reference_wide_block(block, x):
    """Zagoruyko & Komodakis's pre-activation block: o = relu(BN(x)); conv(relu(BN(conv(o)))) plus
    x, or plus a 1x1 conv of o (not of x) where the shape changes."""
    o = F.relu(block.bn1(x))
    skip = block.shortcut(o) if block.shortcut is not None else x
    return block.conv2(F.relu(block.bn2(block.conv1(o)))) + skip


@pytest.mark.parametrize("cin, cout, stride", [(8, 8, 1), (8, 16, 1), (8, 16, 2), (8, 8, 2)])
def test_blocks_compute_their_papers_formulas(cin, cout, stride):
    torch.manual_seed(0)
    x = torch.randn(4, cin, 8, 8)
    for block, reference in ((N._BasicBlock(cin, cout, stride), _reference_basic_block), (N._PreActBlock(cin, cout, stride), _reference_wide_block)):
        for m in block.modules():  # trained-like BN: neither the identity nor a zero branch
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
        block.eval()
        identity = block.shortcut is None or isinstance(block.shortcut, nn.Identity)
        assert identity == (cin == cout and stride == 1), block
        with torch.no_grad():
            assert torch.allclose(block(x), reference(block, x), atol=1e-6), block


def test_a_fresh_resnets_blocks_start_as_identity_and_its_convolutions_as_he_init():
    """Goyal et al.: every residual branch's last BN starts at zero, so each block passes its
    shortcut on; the other BNs start at one, convolutions at He's fan-out normal."""
    torch.manual_seed(0)
    net = N.build_teacher("resnet20", 1, 10).eval()
    x = torch.randn(2, 16, 8, 8)
    blocks = [m for m in net.modules() if isinstance(m, N._BasicBlock)]
    for block in blocks:
        assert torch.equal(block.body[-1][1].weight, torch.zeros(block.body[-1][1].num_features))
        assert torch.equal(block.body[0][1].weight, torch.ones(block.body[0][1].num_features))
    with torch.no_grad():
        assert torch.equal(blocks[0](x), F.relu(x))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 2000]
    for conv in convs:
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.1, conv


def test_a_wide_resnet_without_dropout_is_deterministic_in_training_and_with_it_is_not():
    x = torch.randn(4, 1, 16, 16)
    plain, dropped = N.WideResNet(10, 1, 1, 10).train(), N.WideResNet(10, 1, 1, 10, dropout=0.3).train()
    assert torch.equal(plain(x), plain(x)) and not torch.equal(dropped(x), dropped(x))


@pytest.mark.parametrize("arch, canonical", [("resnet20x1", "resnet20"), (" ResNet20X2 ", "resnet20x2"), ("WRN16-4", "wrn-16-4"), ("tv:ResNet18", "tv:resnet18"), ("resnet8", "resnet8"), ("wrn-10-16", "wrn-10-16")])
def test_arch_names_have_one_spelling(arch, canonical):
    assert N.parse_arch(arch) == canonical


@pytest.mark.parametrize("arch, message", [("resnet2", "resnet depth must be 6n+2"), ("resnet20x17", "width 1..16"), ("wrn-4-1", "WRN depth must be 6n+4"), ("wrn-16-17", "k 1..16"), ("tv:", "unknown teacher 'tv:'")])
def test_arch_names_out_of_range_are_refused(arch, message):
    with pytest.raises(UserError, match=re.escape(message)):
        N.parse_arch(arch)


def test_the_decoder_upsamples_to_half_the_input_rounded_up_then_to_the_input():
    """The decoder of a saved teacher must compute what it was trained as: its first conv works at
    ceil(H/2) x ceil(W/2), its second at the input size."""
    decoder = N.build_teacher("resnet8", 1, 10, reconstruction=(7, 9)).decoder
    sizes = []
    for block in (decoder.up_half, decoder.up_full):
        block.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:])))
    assert decoder(torch.randn(1, 64, 2, 3)).shape == (1, 1, 7, 9) and sizes == [(4, 5), (7, 9)]


@pytest.mark.parametrize("deepest, widths", [(64, (32, 16)), (256, (32, 16)), (16, (16, 16))])
def test_the_decoders_widths_are_capped_at_resnet20s(deepest, widths):
    decoder = N.ReconstructionDecoder(deepest, 1, (8, 8))
    assert (decoder.up_half[0].out_channels, decoder.up_full[0].out_channels) == widths


def test_a_logits_only_model_gets_grey_images_as_three_channels():
    seen = []

    class NeedsRGB(nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.mean((2, 3))

    teacher = N._LogitsOnly(NeedsRGB(), 3, 3)
    grey = torch.randn(2, 1, 4, 4)
    assert torch.equal(teacher(grey), grey.expand(-1, 3, -1, -1).mean((2, 3))) and seen[0].shape == (2, 3, 4, 4)
    rgb = torch.randn(2, 3, 4, 4)
    assert torch.equal(teacher(rgb), rgb.mean((2, 3)))
    with pytest.raises(UserError, match="exposes no stage feature maps"):
        teacher.forward_stages(rgb)
