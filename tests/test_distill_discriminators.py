"""What the discriminators see, how fast they learn, and when they may push the student."""

import pytest
import torch

from nas_kd.distill import losses
from nas_kd.distill.discriminators import (
    GATE_MARGIN,
    GATE_RAMP,
    AccuracyGate,
    LogitDiscriminator,
    TeacherStandardise,
    feature_view,
    verdict_accuracy,
)


def test_feature_view_removes_sign_scale_and_sparsity_per_channel():
    """A post-ReLU teacher map and a signed BN-like student map with the same spatial pattern
    look identical: the discriminator cannot win on sign, scale or offset."""
    torch.manual_seed(0)
    pattern = torch.randn(8, 5, 4, 4)
    teacher_like = torch.relu(pattern + 0.7) * 3.0  # non-negative, mostly active, scaled
    student_like = pattern * torch.tensor([0.5, 1, 2, 4, 8]).view(1, -1, 1, 1) - 1.5  # signed, per-channel scales
    a, b = feature_view(teacher_like), feature_view(student_like)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)  # equal up to the eps in the scale
    # Half of each channel's positions are active, with unit root mean square.
    assert torch.allclose((a > 0).float().mean((0, 2, 3)), torch.full((5,), 0.5), atol=1 / 128)
    assert torch.allclose(a.pow(2).mean((0, 2, 3)), torch.ones(5), atol=1e-3)
    # ... while a different spatial pattern stays different.
    assert not torch.allclose(a, feature_view(torch.randn(8, 5, 4, 4)), atol=0.1)


def test_teacher_standardise_uses_teacher_moments_and_never_amplifies():
    s = TeacherStandardise(2)
    x = torch.tensor([[1.0, 2.0]])
    assert torch.equal(s(x), x)  # nothing observed yet: the identity
    s.observe(torch.tensor([[0.0, 10.0], [4.0, 10.2]]))  # class 0: mean 2, var 4; class 1: mean 10.1, var 0.01
    s.observe(torch.tensor([[2.0, 10.1]]))  # running moments over all three rows
    mean0, var0 = 2.0, (0 + 16 + 4) / 3 - 4.0
    out = s(torch.tensor([[5.0, 11.1]]))
    assert out[0, 0].item() == pytest.approx((5.0 - mean0) / var0**0.5, rel=1e-5)
    assert out[0, 1].item() == pytest.approx(11.1 - 10.1, rel=1e-5)  # variance floored at 1: no amplification


def test_gate_is_closed_at_chance_and_open_above_it():
    gate = AccuracyGate(0.5)
    assert gate.factor().item() == 0.0
    gate.accuracy.fill_(0.5 + GATE_MARGIN + GATE_RAMP / 2)
    assert gate.factor().item() == pytest.approx(0.5)
    gate.accuracy.fill_(0.99)
    assert gate.factor().item() == 1.0
    gate.accuracy.fill_(0.5)
    for _ in range(30):
        gate.observe(torch.tensor(1.0))
    assert gate.accuracy.item() == pytest.approx(1 - 0.5 * 0.9**30) and gate.factor().item() == 1.0


def test_verdict_accuracy_weights_real_and_fake_alike():
    real, fake = torch.tensor([1.0, 1.0, -1.0, 1.0]), torch.tensor([-1.0, 1.0])
    assert verdict_accuracy(real, fake).item() == pytest.approx(0.5 * (0.75 + 0.5))


def test_the_logit_discriminator_learns_within_a_short_schedule():
    """Teacher-like logits (confident, right class) against student-like ones (small, noisy):
    at the mode's learning rate, both verdicts are far above chance within 30 steps."""
    from nas_kd.distill import MODES

    torch.manual_seed(0)
    disc = LogitDiscriminator(10)
    opt = torch.optim.Adam(disc.parameters(), lr=MODES["full"].logit_disc_lr, betas=(0.5, 0.999))
    for _ in range(30):
        y = torch.randint(0, 10, (64,))
        teacher = 6 * torch.nn.functional.one_hot(y, 10).float() + torch.randn(64, 10)
        student = 0.5 * torch.randn(64, 10)
        disc.standardise.observe(teacher)
        scores, classes = disc(torch.cat([teacher, student]))
        loss = losses.discriminator_bce(scores[:64], scores[64:]) + losses.auxiliary_ce(classes, torch.cat([y, y]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    disc.eval()
    with torch.no_grad():
        scores, classes = disc(torch.cat([teacher, student]))
    assert verdict_accuracy(scores[:64], scores[64:]).item() > 0.9
    assert (classes[:64].argmax(1) == y).float().mean().item() > 0.9


def test_r1_penalty_is_gamma_half_the_squared_input_gradient_and_trains_the_discriminator():
    """A 1x1-conv discriminator scores w·x + b per position: the gradient of its summed scores
    for one image is w at each of its H*W positions, so R1 = gamma/2 * H*W * ||w||^2, and its
    gradient with respect to w is gamma * H*W * w (the penalty must reach the discriminator)."""
    torch.manual_seed(0)
    disc = torch.nn.Conv2d(4, 1, 1)
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    penalty = losses.r1_penalty(disc(x).squeeze(1), x, gamma=2.0)
    w = disc.weight.detach().flatten()
    assert penalty.item() == pytest.approx(0.5 * 2.0 * 30 * w.pow(2).sum().item(), rel=1e-5)
    penalty.backward()
    assert torch.allclose(disc.weight.grad.flatten(), 2.0 * 30 * w, rtol=1e-5)


def test_r1_keeps_the_feature_discriminator_gentle_at_teacher_maps():
    """Trained to separate two map distributions, a discriminator without R1 grows steep around
    the real ones (large gradients for the student); with the mode knob's R1 it stays flatter."""
    from nas_kd.distill.discriminators import FeatureDiscriminator

    def steepness(gamma: float) -> float:
        torch.manual_seed(0)
        disc = FeatureDiscriminator(8)
        opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
        for _ in range(60):
            real = feature_view(torch.relu(torch.randn(32, 8, 7, 7) + 0.5))
            fake = feature_view(torch.randn(32, 8, 7, 7).abs() * torch.rand(32, 8, 1, 1))
            real.requires_grad_(True)
            scores = disc(real)
            loss = losses.discriminator_bce(scores, disc(fake))
            if gamma:
                loss = loss + losses.r1_penalty(scores, real, gamma)
            opt.zero_grad()
            loss.backward()
            opt.step()
        real = feature_view(torch.relu(torch.randn(64, 8, 7, 7) + 0.5)).requires_grad_(True)
        (grad,) = torch.autograd.grad(disc(real).sum(), real)
        return grad.flatten(1).norm(dim=1).mean().item()

    assert steepness(10.0) < 0.5 * steepness(0.0)


def test_teacher_standardise_works_out_its_normaliser_once_and_after_a_load():
    """The normaliser is derived from the moments when they change (at `observe`, and when a
    state_dict brings other moments), not at every judgement: a judgement is two ops."""
    from bench.step_ops import ops_dispatched

    s = TeacherStandardise(3)
    s.observe(torch.tensor([[0.0, 5.0, 1.0], [4.0, 9.0, 1.5], [2.0, -3.0, 0.5]]))
    x = torch.randn(6, 3)
    assert sum(ops_dispatched(s, x).values()) == 2
    loaded = TeacherStandardise(3)
    loaded.load_state_dict(s.state_dict())
    assert set(s.state_dict()) == {"count", "total", "total_sq"}  # the normaliser is derived, not saved
    assert torch.equal(loaded(x), s(x)) and not torch.equal(loaded(x), x)


def test_feature_view_reuses_its_statistics_for_the_same_values():
    """A memo shared by a detached and a live view of one map: the second call returns the same
    numbers and gradient as a fresh view, without working the statistics out again."""
    from bench.step_ops import ops_dispatched

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(16, 6, 5, 5, generator=g) * 2 + 1).requires_grad_(True)
    fresh = feature_view(x)
    (fresh * torch.arange(fresh.numel()).view_as(fresh)).sum().backward()
    expected_grad, x.grad = x.grad.clone(), None
    memo: dict = {}
    assert torch.equal(feature_view(x.detach(), memo=memo), fresh.detach())
    reused = feature_view(x, memo=memo)
    assert torch.equal(reused, fresh)
    (reused * torch.arange(reused.numel()).view_as(reused)).sum().backward()
    assert torch.equal(x.grad, expected_grad)
    assert "median" in ops_dispatched(feature_view, x.detach(), memo={})
    again = ops_dispatched(feature_view, x.detach(), memo=memo)
    assert "median" not in again and "sqrt" not in again


def test_a_full_step_views_the_student_map_once_and_trains_as_before(monkeypatch):
    """The discriminators' update and the student's adversarial term share the view's statistics
    (`Adapted.view_memo`): three adversarial steps train bit for bit as when each works them out."""
    from test_distill_step import batch, make, weights

    import nas_kd.distill.objective as objective

    def run():
        step, student, _ = make("full")
        x, y = batch()
        losses = [step(x, y, adversarial=True).losses for _ in range(3)]
        return weights(student), weights(step.objective), losses

    calls: list[bool] = []
    real = objective.feature_view

    def counting(maps, eps=1e-5, memo=None, unit=1.0):
        calls.append(memo is not None and "stats" in memo)
        return real(maps, eps, memo=memo, unit=unit)

    monkeypatch.setattr(objective, "feature_view", counting)
    shared = run()
    assert calls.count(True) == 3  # once a step: the student's term reused the update's statistics
    monkeypatch.setattr(objective, "feature_view", lambda maps, eps=1e-5, memo=None, unit=1.0: real(maps, eps, unit=unit))
    alone = run()
    for a, b in zip(shared[:2], alone[:2], strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(p[k], q[k]) for p, q in zip(shared[2], alone[2], strict=True) for k in p)


def test_a_verdict_barely_above_chance_does_not_push_the_student():
    """A discriminator right by a few points on a batch is still noise: the gate stays shut up to
    chance + 0.05 (docs/DISTILLER.md), for real/fake verdicts and for the class prediction alike."""
    for chance in (0.5, 0.1):
        gate = AccuracyGate(chance)
        gate.accuracy.fill_(chance + 0.049)
        assert gate.factor().item() == 0.0
        gate.accuracy.fill_(chance + 0.1)
        assert 0.0 < gate.factor().item() < 1.0
