"""The map terms in the teacher's units: the same teacher with every stage map 0.1x as large (its
predictions unchanged) gives the student the same losses and the same gradients."""

import copy

import pytest
import torch
from test_distill_step import TINY

from nas_kd.data import load_splits
from nas_kd.distill import get_mode
from nas_kd.distill.attention_fit import fit_teacher_attention
from nas_kd.distill.map_scale import PROBE_IMAGES, teacher_map_scales
from nas_kd.distill.objective import DistillObjective
from nas_kd.distill.outputs import teacher_outputs
from nas_kd.models.rescale import rescaled_activations
from nas_kd.models.student import build_student
from nas_kd.models.teachers import build_teacher
from nas_kd.train import make_loaders

CPU = torch.device("cpu")
SHAPE = (1, 16, 16)
# Every map term (feat, desc, adv_feat, recon) beside kd and the logit discriminator.
MODE = get_mode("full+recon=0.1")


@pytest.fixture(scope="module")
def loader():
    return make_loaders(load_splits("synthetic", train_subset=96), batch_size=32, device=CPU, seed=0, crop=False)[0]


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(0)
    t = build_teacher("resnet8", 1, 10, reconstruction=SHAPE[1:]).eval().requires_grad_(False)
    return t, rescaled_activations(t, 0.1)


def test_a_rescaled_teacher_predicts_the_same_with_maps_a_tenth(teachers, loader):
    t, small = teachers
    x = loader.view(torch.arange(32), flip=False)
    with torch.no_grad():
        (maps, logits), (small_maps, small_logits) = t.forward_stages(x), small.forward_stages(x)
        assert torch.allclose(logits, small_logits, atol=1e-4)
        assert torch.allclose(t.decoder(maps[-1]), small.decoder(small_maps[-1]), atol=1e-4)
    for m, s in zip(maps, small_maps, strict=True):
        assert torch.allclose(s, 0.1 * m, atol=1e-5)


def test_scales_are_the_maps_root_mean_square_measured_once(teachers, loader):
    """Measured in eval mode (BN's running statistics, as the frozen teacher runs in distillation)
    even on a teacher left in training mode, which it leaves as it was, its statistics unmoved;
    a second call on the same teacher and loader runs nothing."""
    t = copy.deepcopy(teachers[0]).train()
    stats = {k: v.clone() for k, v in t.state_dict().items()}
    calls = []
    forward_stages = t.forward_stages
    t.forward_stages = lambda x: calls.append(1) or forward_stages(x)
    scales = teacher_map_scales(t, loader)
    assert t.training is True and all(torch.equal(stats[k], v) for k, v in t.state_dict().items())
    probe = loader.view(torch.arange(min(PROBE_IMAGES, loader.num_examples)), flip=False)
    with torch.no_grad():
        maps, _ = copy.deepcopy(teachers[0]).eval().forward_stages(probe)
    assert scales == pytest.approx([m.pow(2).mean().sqrt().item() for m in maps], rel=1e-5)
    assert teacher_map_scales(t, loader) == scales and calls == [1]
    assert teacher_map_scales(teachers[1], loader) == pytest.approx([0.1 * s for s in scales], rel=1e-4)


def _losses_and_grads(teacher, loader, scaled: bool):
    """The student's map-term losses and the gradient of their weighted sum on its parameters, for
    one batch, with a seeded student, adapters and discriminators."""
    attention = fit_teacher_attention(teacher, loader, 10, epochs=1)
    torch.manual_seed(1)
    student = build_student(TINY, 1, 10)
    objective = DistillObjective(MODE, student, teacher, SHAPE, 10, attention, teacher_map_scales(teacher, loader) if scaled else None)
    x, y = loader.view(torch.arange(32), flip=False), loader.y[:32]
    o = objective
    t = teacher_outputs(teacher, x, o.map_stages, o.attention, o.desc_stages)
    maps, logits = student.forward_stages(x)
    parts = o.student_losses(logits, o.adapt(maps), t, y, x, adversarial=True)
    total = sum(o.weight(k) * v for k, v in parts.items())
    grads = torch.autograd.grad(total, list(student.parameters()))
    return {k: v.item() for k, v in parts.items()}, torch.cat([g.flatten() for g in grads])


def test_map_terms_and_the_students_gradient_do_not_depend_on_the_teachers_scale(teachers, loader):
    (parts, grad), (small_parts, small_grad) = (_losses_and_grads(t, loader, scaled=True) for t in teachers)
    assert set(parts) >= {"feat", "desc", "recon", "adv_feat"}
    assert small_parts == pytest.approx(parts, rel=1e-5, abs=1e-7)
    assert (small_grad - grad).norm() < 1e-5 * grad.norm()  # 5e-7 measured: float rounding


def test_without_the_scales_a_smaller_teacher_changes_the_terms(teachers, loader):
    """What the scales are for: unscaled, the same teacher at 0.1x gives the student another
    gradient (measured: the descriptor term 52.8 -> 8,304, the gradient 238x its size apart)."""
    (parts, grad), (small_parts, small_grad) = (_losses_and_grads(t, loader, scaled=False) for t in teachers)
    assert small_parts["desc"] > 10 * parts["desc"]
    assert (small_grad - grad).norm() > grad.norm()


def test_a_teacher_with_trained_statistics_rescales_exactly(loader):
    """A fresh BN (mean 0, bias 0) would hide a running mean or a bias left unscaled: here every BN
    has the non-zero statistics and affine a trained teacher has."""
    torch.manual_seed(1)
    t = build_teacher("resnet8", 1, 10, reconstruction=SHAPE[1:])
    for m in t.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.3)
    t.eval().requires_grad_(False)
    x = loader.view(torch.arange(32), flip=False)
    for c in (0.1, 3.0):
        big = rescaled_activations(t, c)
        with torch.no_grad():
            (maps, logits), (big_maps, big_logits) = t.forward_stages(x), big.forward_stages(x)
            assert torch.allclose(logits, big_logits, atol=1e-4)
            assert torch.allclose(t.decoder(maps[-1]), big.decoder(big_maps[-1]), atol=1e-4)
        for m, b in zip(maps, big_maps, strict=True):
            assert torch.allclose(b, c * m, rtol=1e-4, atol=1e-5)


def test_only_a_cifar_resnet_rescales_and_only_by_a_positive_factor(teachers):
    with pytest.raises(TypeError):
        rescaled_activations(build_teacher("wrn-16-1", 1, 10), 0.1)
    with pytest.raises(ValueError):
        rescaled_activations(teachers[0], 0.0)


def _train_steps(teacher, steps: int) -> torch.Tensor:
    """The student's weights after ``steps`` distillation steps (teacher outputs cached, as a search
    has them), on a fresh loader: the same batches every call."""
    from nas_kd.config import Schedule
    from nas_kd.distill.cache import TeacherCache
    from nas_kd.distill.trainer import build_step

    loader = make_loaders(load_splits("synthetic", train_subset=96), batch_size=32, device=CPU, seed=0, crop=False)[0]
    cache = TeacherCache(teacher, loader, MODE, num_classes=10)
    torch.manual_seed(1)
    student = build_student(TINY, 1, 10)
    schedule = Schedule(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0, crop=False)
    step = build_step(student, teacher, MODE, schedule, input_shape=SHAPE, num_classes=10, steps_per_epoch=steps, device=CPU, cache=cache, teacher_attention=cache.attention_state, map_scales=teacher_map_scales(teacher, loader))
    for _, b in zip(range(steps), loader.batches(), strict=False):
        step(b.x, b.y, adversarial=True, index=b.index, flipped=b.flipped)
    return torch.cat([p.detach().flatten() for p in student.parameters()])


def test_a_teacher_scaled_by_a_power_of_two_trains_the_student_bit_for_bit_alike(teachers):
    """Scaling by 2**k is exact in floating point (the cache's bfloat16 too), so every step must
    match exactly: any term that still read the teacher's scale would move the student apart."""
    _train_steps(teachers[0], 3)  # the process's first run differs in the 8th digit (oneDNN's first calls)
    same = _train_steps(teachers[0], 3)
    assert torch.equal(_train_steps(rescaled_activations(teachers[0], 0.125), 3), same)
    assert torch.equal(_train_steps(rescaled_activations(teachers[0], 8.0), 3), same)


def test_the_attention_is_fitted_on_the_stored_images_and_loaded_frozen(teachers, loader, monkeypatch):
    """Fitted on the training images as stored, un-augmented (nas_kd.distill.attention_fit), and
    loaded frozen, in eval mode: nothing trains it during distillation."""
    from nas_kd.distill.attention_fit import load_teacher_attention

    flips = []
    view = loader.view
    monkeypatch.setattr(loader, "view", lambda index, flip=False: flips.append(flip) or view(index, flip=flip))
    state = fit_teacher_attention(teachers[0], loader, 10, epochs=1)
    assert flips and not any(flips)
    attention = load_teacher_attention(state, teachers[0], 10)
    assert attention.training is False and not any(p.requires_grad for p in attention.parameters())
