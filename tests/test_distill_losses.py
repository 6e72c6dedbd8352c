"""Golden values for every distillation loss, computed by hand on tiny tensors."""

import math

import pytest
import torch
from torch import nn

from nas_kd.distill import losses
from nas_kd.distill.attention import AttentionSqueeze, attention_pool

LN3 = math.log(3.0)


def approx(x):
    return pytest.approx(x, rel=1e-5, abs=1e-6)


def test_kd_at_temperature_one_is_kl_of_softmaxes():
    # softmax([ln3, 0]) = [3/4, 1/4]; softmax([0, 0]) = [1/2, 1/2].
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), 1.0).item() == approx(kl)


def test_kd_scales_by_t_squared_and_averages_over_the_batch():
    # At T=2 the teacher's [ln3, 0] becomes softmax([ln3/2, 0]) = [√3, 1] / (√3 + 1).
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    student = torch.tensor([[0.0, 0.0], [5.0, 5.0]])  # both rows predict [1/2, 1/2]
    teacher = torch.tensor([[LN3, 0.0], [1.0, 1.0]])  # second row: KL = 0
    assert losses.kd_loss(student, teacher, 2.0).item() == approx(4 * kl / 2)


def test_logit_l1_and_l2_are_per_logit_means():
    s, t = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [0.0, 8.0]])
    assert losses.logit_l1(s, t).item() == approx((1 + 2 + 3 + 4) / 4)
    assert losses.logit_l2(s, t).item() == approx((1 + 4 + 9 + 16) / 4)


def test_feature_mse_averages_stages():
    s = [torch.ones(2, 3, 4, 4), torch.full((1, 2, 2, 2), 2.0)]
    t = [torch.zeros(2, 3, 4, 4), torch.zeros(1, 2, 2, 2)]
    assert losses.feature_mse(s, t).item() == approx((1 + 4) / 2)


def test_descriptor_l2():
    s = [torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 3.0, 3.0]])]
    t = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]])]
    assert losses.descriptor_l2(s, t).item() == approx((0.5 + 9) / 2)


def test_gan_losses():
    # sigmoid(ln3) = 3/4.
    score = torch.tensor([LN3])
    assert losses.discriminator_bce(score, score).item() == approx(0.5 * (-math.log(0.75) - math.log(0.25)))
    assert losses.discriminator_bce(torch.zeros(3, 2, 2), torch.zeros(5, 2, 2)).item() == approx(math.log(2))
    assert losses.generator_bce(score).item() == approx(-math.log(0.75))
    assert losses.auxiliary_ce(torch.tensor([[0.0, LN3]]), torch.tensor([1])).item() == approx(-math.log(0.75))


def test_weight_penalty_counts_weight_matrices_only():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 3.0]]))
        layer.bias.fill_(5.0)
    assert losses.weight_penalty(layer, 0.1, 0.01).item() == approx(0.1 * 6 + 0.01 * 14)


def test_attention_pool_is_a_softmax_weighted_mean_over_positions():
    features = torch.tensor([[[[1.0, 3.0]], [[2.0, 4.0]]]])  # (1, 2 channels, 1, 2 positions)
    scores = torch.tensor([[[[0.0, LN3]]]])  # softmax -> [1/4, 3/4]
    assert attention_pool(features, scores).tolist() == [[approx(2.5), approx(3.5)]]


def test_attention_squeeze_adds_the_projected_global_descriptor_before_pooling():
    squeeze = AttentionSqueeze([2], global_dim=4)
    with torch.no_grad():
        for p in squeeze.parameters():
            p.zero_()
        squeeze.project[0].bias.copy_(torch.tensor([1.0, -1.0]))  # L' = L + [1, -1]
        squeeze.score[0].weight[0, 0] = 1.0  # the score is channel 0 of L'
    stage = torch.tensor([[[[-1.0, LN3 - 1]], [[3.0, 5.0]]]])
    # L' channel 0 = [0, ln3] -> attention [1/4, 3/4]; channel 1 = [2, 4].
    (desc,) = squeeze([stage])
    assert desc.tolist() == [[approx(0.75 * LN3), approx(0.25 * 2 + 0.75 * 4)]]


def test_attention_squeeze_equals_the_literal_recipe_with_random_weights():
    torch.manual_seed(0)
    squeeze = AttentionSqueeze([3, 5], global_dim=8)
    maps = [torch.randn(4, 3, 6, 6), torch.randn(4, 5, 3, 3)]
    g = squeeze.global_conv(maps[-1]).mean((2, 3))
    for stage_map, project, score, desc in zip(maps, squeeze.project, squeeze.score, squeeze(maps), strict=True):
        lifted = stage_map + project(g)[:, :, None, None]
        assert torch.allclose(desc, attention_pool(lifted, score(lifted)), atol=1e-5)


def test_weight_penalty_costs_the_same_few_ops_for_any_number_of_matrices():
    """One pass over all matrices at once: on a GPU each op is a launch (bench/step_ops.py)."""
    from bench.step_ops import ops_dispatched

    def ops(layers: int) -> int:
        net = nn.Sequential(*(nn.Linear(4, 4) for _ in range(layers)))
        return sum(ops_dispatched(lambda: losses.weight_penalty(net, 0.1, 0.01).backward()).values())

    assert ops(2) == ops(6)
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2))
    want = sum(0.1 * w.abs().sum() + 0.01 * w.pow(2).sum() for w in (net[0].weight, net[1].weight))
    assert losses.weight_penalty(net, 0.1, 0.01).item() == approx(want.item())


def test_a_subset_of_the_teachers_attention_summarises_its_stages_as_the_whole_does():
    """What a mode supervising fewer stages reads: the same descriptors, stage for stage, as the
    whole squeeze gives, including each stage's own map scale (a subset taking another stage's
    scale would judge the student by another yardstick)."""
    from nas_kd.distill.attention import TeacherAttention

    torch.manual_seed(0)
    channels = (4, 6, 8)
    whole = TeacherAttention(channels, 10)
    whole.squeeze.stage_scale.copy_(torch.tensor([0.5, 2.0, 3.0]))
    maps = [torch.randn(5, c, s, s) for c, s in zip(channels, (8, 4, 2), strict=True)]
    every = whole.squeeze(maps)
    for stages in ([0, 2], [1, 2], [2]):
        part = whole.subset(stages).squeeze([maps[j] for j in stages])
        for got, j in zip(part, stages, strict=True):
            assert torch.allclose(got, every[j], atol=1e-6)
    with pytest.raises(ValueError, match="deepest"):
        whole.subset([0, 1])  # g comes from the last map given: it must be the deepest


def test_the_task_loss_averages_every_stages_head():
    """The attention is task-driven at every stage, shallow ones too (a fit that scored only the
    deepest head would leave the shallow stages' attention untrained)."""
    from nas_kd.distill.attention import TeacherAttention

    torch.manual_seed(0)
    attention = TeacherAttention((4, 6), 10)
    descriptors = [torch.randn(5, 4), torch.randn(5, 6)]
    labels = torch.tensor([0, 3, 9, 3, 1])
    per_stage = [torch.nn.functional.cross_entropy(head(d), labels) for head, d in zip(attention.heads.heads, descriptors, strict=True)]
    assert torch.allclose(attention.task_loss(descriptors, labels), (per_stage[0] + per_stage[1]) / 2)
