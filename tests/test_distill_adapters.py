"""Stage pairing and teacher-to-student adapters."""

import torch

from nas_kd.distill.adapters import StageAdapter, StageAdapters, pair_stages, pool_to, stage_sizes
from nas_kd.models.teachers import build_teacher


def test_equal_layouts_pair_one_to_one():
    sizes = [(28, 28), (14, 14), (7, 7)]
    assert pair_stages(sizes, sizes) == [(0, 0), (1, 1), (2, 2)]


def test_deepest_stages_pair_and_shallower_ones_match_resolution():
    student = [(28, 28), (14, 14), (7, 7), (4, 4), (4, 4)]  # an mbv2 student on 28x28
    teacher = [(28, 28), (14, 14), (7, 7)]  # a CIFAR ResNet
    assert pair_stages(student, teacher) == [(0, 0), (1, 1), (4, 2)]


def test_closest_size_when_no_student_stage_matches_and_fewer_student_stages():
    assert pair_stages([(16, 16), (4, 4)], [(32, 32), (16, 16), (8, 8)]) == [(0, 1), (1, 2)]
    assert pair_stages([(8, 8)], [(32, 32), (8, 8)]) == [(0, 1)]
    assert pair_stages([], [(8, 8)]) == []


def test_adapter_maps_channels_and_resizes_both_ways():
    x = torch.randn(2, 5, 9, 9)
    for size in [(4, 4), (18, 18), (3, 12), (9, 9)]:
        assert StageAdapter(5, 7)(x, size).shape == (2, 7, *size)


def test_adapters_between_real_networks():
    student, teacher = build_teacher("resnet8", 1, 10), build_teacher("resnet8x2", 1, 10)
    s_sizes, t_sizes = stage_sizes(student, (1, 12, 12)), stage_sizes(teacher, (1, 12, 12))
    assert s_sizes == t_sizes == [(12, 12), (6, 6), (3, 3)]
    pairs = pair_stages(s_sizes, t_sizes)
    adapters = StageAdapters(pairs, student.stage_channels, teacher.stage_channels, t_sizes)
    x = torch.randn(3, 1, 12, 12)
    s_maps, _ = student.forward_stages(x)
    t_maps, _ = teacher.forward_stages(x)
    out = adapters(s_maps)
    assert [o.shape for o in out.maps] == [t.shape for t in t_maps]
    assert out.coarse is not None and torch.equal(out.coarse, out.maps[-1])  # equal sizes: nothing resized
    assert student.training  # the probe restored the mode


def test_the_deepest_map_is_also_kept_before_upsampling():
    """The feature discriminator judges the coarse map: upsampling would betray the student."""
    torch.manual_seed(0)
    adapters = StageAdapters([(0, 0), (1, 1)], [3, 5], [4, 6], [(8, 8), (6, 6)])
    out = adapters([torch.randn(2, 3, 16, 16), torch.randn(2, 5, 3, 3)])
    assert out.maps[0].shape == (2, 4, 8, 8) and out.maps[1].shape == (2, 6, 6, 6)
    assert out.coarse.shape == (2, 6, 3, 3)
    # The upsampled map is the coarse one, bilinearly interpolated.
    assert torch.allclose(out.maps[1], torch.nn.functional.interpolate(out.coarse, size=(6, 6), mode="bilinear", align_corners=False))
    # pool_to brings a teacher map down to the same size by area averaging, and leaves smaller ones.
    t = torch.arange(36.0).view(1, 1, 6, 6)
    assert pool_to(t, (3, 3))[0, 0, 0, 0].item() == (0 + 1 + 6 + 7) / 4 and pool_to(t, (8, 8)) is t


def test_a_sample_of_the_batch_is_adapted_and_the_gradient_keeps_the_student_layout():
    """``samples`` adapts the first images only; the student map's gradient is zero for the rest
    and comes back in the map's own layout (a contiguous gradient on a channels_last map made the
    student's BN backward several times slower)."""
    torch.manual_seed(0)
    adapter = StageAdapter(4, 6)
    x = torch.randn(8, 4, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    student_map = x * 1  # not a leaf: a leaf's .grad is re-laid-out by autograd, hiding the layout
    handed_back = []
    student_map.register_hook(handed_back.append)
    out = adapter(student_map, (6, 6), samples=3)
    assert out.shape == (3, 6, 6, 6)
    weight = torch.randn(out.shape)
    (out * weight).sum().backward()
    assert handed_back[0].is_contiguous(memory_format=torch.channels_last)
    assert x.grad[3:].abs().sum() == 0 and x.grad[:3].abs().sum() > 0
    head = x.detach()[:3].clone().requires_grad_(True)
    (adapter(head, (6, 6)) * weight).sum().backward()
    torch.testing.assert_close(x.grad[:3], head.grad)
    assert adapter(x, (6, 6), samples=8).shape[0] == adapter(x, (6, 6), samples=100).shape[0] == 8


def test_of_two_student_stages_at_the_teachers_size_the_deeper_pairs():
    # Stages 1 and 2 both at 8 px: the deeper one has learnt more, and it pairs (the docstring's
    # tie rule); the shallower is left unsupervised.
    student = [(16, 16), (8, 8), (8, 8), (4, 4)]
    teacher = [(16, 16), (8, 8), (4, 4)]
    assert pair_stages(student, teacher) == [(0, 0), (2, 1), (3, 2)]


def test_pool_to_shrinks_each_dimension_that_is_larger_and_leaves_the_other():
    x = torch.arange(32.0).view(1, 1, 8, 4)
    pooled = pool_to(x, (4, 8))  # taller than the target, narrower than it
    assert pooled.shape == (1, 1, 4, 4)
    assert torch.equal(pooled, (x[..., 0::2, :] + x[..., 1::2, :]) / 2)
