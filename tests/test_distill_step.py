"""One alternating update per mode: who learns, who does not, and how failures surface."""

import pytest
import torch

from nas_kd.config import Schedule
from nas_kd.distill import MODES, check_teacher, get_mode
from nas_kd.distill.attention import TeacherAttention
from nas_kd.distill.trainer import build_step
from nas_kd.errors import UserError
from nas_kd.models.student import StageConfig, StudentConfig, build_student
from nas_kd.models.teachers import build_teacher
from nas_kd.train import NonFiniteLossError

SHAPE, CLASSES = (1, 16, 16), 10
CPU = torch.device("cpu")
SCHEDULE = Schedule(epochs=1, batch_size=16, lr=0.1, warmup_epochs=0)
# Four stages (16, 8, 4, 4 px) against the teacher's three (16, 8, 4): pairing and resizing run.
TINY = StudentConfig(
    block="inverted_residual",
    stem_width=4,
    stages=(StageConfig(1, 4, 1), StageConfig(1, 8, 2, expand=2), StageConfig(1, 8, 2, expand=2), StageConfig(1, 12, 1, expand=2)),
)


def attention_state(teacher):
    """A seeded, unfitted teacher attention: the step only needs *a* frozen one."""
    torch.manual_seed(5)
    return TeacherAttention(teacher.stage_channels, CLASSES).state_dict()


def make(mode_name: str, recon: bool = False, map_scales=None):
    torch.manual_seed(0)
    student = build_student(TINY, 1, CLASSES)
    mode = get_mode(mode_name)
    teacher = build_teacher("resnet8", 1, CLASSES, reconstruction=SHAPE[1:] if recon or mode.needs_reconstruction else None).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    attention = attention_state(teacher) if mode.weights.desc else None
    torch.manual_seed(1)
    step = build_step(student, teacher, mode, SCHEDULE, input_shape=SHAPE, num_classes=CLASSES, steps_per_epoch=4, device=CPU, teacher_attention=attention, map_scales=map_scales)
    return step, student, teacher


def batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def weights(module):
    """Trainable parameters only: BN running statistics move in any forward pass in train mode."""
    return {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", list(MODES))
def test_one_step_moves_every_trainable_student_weight_and_never_the_teacher(name):
    step, student, teacher = make(name)
    before_w, before_t = weights(student), snapshot(teacher)
    result = step(*batch())
    assert set(MODES[name].weights.active()) <= set(result.losses)
    assert all(torch.isfinite(v) for v in result.losses.values())
    moved = {k for k, p in student.named_parameters() if not torch.equal(before_w[k], p)}
    # Every weight with a gradient moves (SGD with weight decay moves even zero-gradient weights,
    # so this is a check on the optimiser step, the terms have their own tests).
    assert moved == set(before_w), sorted(set(before_w) - moved)[:5]
    after_t = teacher.state_dict()
    assert all(torch.equal(before_t[k], after_t[k]) for k in before_t)  # bit for bit, BN stats included


def test_zero_weights_build_nothing():
    kd_step, _, _ = make("kd")
    assert kd_step.objective.adapters is None and kd_step.objective.discriminators() == [] and kd_step.disc_optimizer is None
    assert list(kd_step.objective.parameters()) == []
    ktan = make("ktan")[0].objective
    assert ktan.logit_disc is None and ktan.attention is None and len(ktan.pairs) == 1
    full = make("full")[0].objective
    assert full.pairs == [(0, 0), (1, 1), (3, 2)] and len(full.discriminators()) == 2


def test_discriminators_and_student_learn_only_in_their_own_step():
    step, student, _ = make("full")
    discs = step.objective.discriminators()
    disc_params = {id(p) for d in discs for p in d.parameters()}
    student_opt_params = {id(p) for g in step.optimizer.param_groups for p in g["params"]}
    assert not disc_params & student_opt_params
    x, y = batch()
    logits, adapted, t = step.forward(x)

    def disc_params():
        return [p for d in discs for p in d.parameters()]

    def same(before, params):
        return [torch.equal(a, p) for a, p in zip(before, params, strict=True)]

    before_s = [p.detach().clone() for p in student.parameters()]
    before_d = [p.detach().clone() for p in disc_params()]
    step.discriminator_update(adapted, logits, t, y)
    assert all(same(before_s, student.parameters()))
    assert all(p.grad is None for p in student.parameters())
    assert not all(same(before_d, disc_params()))

    after_d = [p.detach().clone() for p in disc_params()]
    parts = step.student_losses(logits, adapted, t, y, x, adversarial=True)
    assert {"adv_logit", "adv_feat"} <= set(parts)
    step.student_update(step.objective.weighted_sum(parts))
    assert all(p.grad is None for p in disc_params())
    assert all(same(after_d, disc_params()))
    assert not all(same(before_s, student.parameters()))
    assert all(p.requires_grad for p in disc_params())  # unfrozen afterwards


def test_adversarial_terms_wait_for_the_warm_up():
    step, _, _ = make("full")
    assert not {"adv_logit", "adv_feat"} & set(step(*batch(), adversarial=False).losses)


def test_a_closed_gate_keeps_its_term_from_the_student_and_an_open_one_lets_it_push(monkeypatch):
    """The step weights each adversarial term by its gate's factor: with every gate shut (a
    discriminator no better than chance) the student's update is the one without adversarial
    terms (to rounding: the zero-weighted branches change the order autograd sums gradients in,
    ~1e-7 here); with them open it moves by far more (~5e-2 here)."""

    def updated(adversarial: bool, factor: float | None):
        step, student, _ = make("full")
        if factor is not None:
            monkeypatch.setattr(step.objective, "gate_factors", lambda: {k: torch.tensor(factor) for k in step.objective.gates})
        torch.manual_seed(2)
        step(*batch(), adversarial=adversarial)
        return weights(student)

    plain, shut, open_ = updated(False, None), updated(True, 0.0), updated(True, 1.0)
    assert max(float((plain[k] - shut[k]).abs().max()) for k in plain) < 1e-6
    assert max(float((plain[k] - open_[k]).abs().max()) for k in plain) > 1e-3


def test_nan_raises_non_finite_loss_error():
    step, student, _ = make("full")
    with torch.no_grad():
        student.head.fc.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="distillation loss became nan"):
        step(*batch())


def test_teachers_that_cannot_serve_a_mode_are_refused():
    plain = build_teacher("resnet8", 1, CLASSES)
    with pytest.raises(UserError, match="needs a teacher trained with the reconstruction head .*'nas-kd teacher --reconstruction'"):
        check_teacher(MODES["zhang"], plain)
    check_teacher(MODES["zhang"], build_teacher("resnet8", 1, CLASSES, reconstruction=(16, 16)))
    with pytest.raises(UserError, match="none was given"):
        check_teacher(MODES["kd"], None)
    check_teacher(MODES["ce"], None)

    class LogitsOnly(torch.nn.Module):
        stage_channels = ()

    with pytest.raises(UserError, match="exposes none: use mode kd or xu"):
        check_teacher(MODES["ktan"], LogitsOnly())
    check_teacher(MODES["xu"], LogitsOnly())


def test_feat_r1_adds_its_penalty_to_the_feature_discriminators_loss():
    from nas_kd.distill import losses
    from nas_kd.distill.adapters import pool_to
    from nas_kd.distill.discriminators import feature_view

    x, y = batch()
    got = {}
    for name in ("ktan+feat_r1=0", "ktan+feat_r1=5"):
        step, _, _ = make(name)
        logits, adapted, t = step.forward(x)
        got[name], _ = step.objective.discriminator_loss(adapted.detach(), logits.detach(), t, y)
    real = feature_view(pool_to(t.maps[-1], adapted.coarse.shape[-2:])).detach().requires_grad_(True)
    expected = losses.r1_penalty(step.objective.feature_disc(real), real, 5.0)
    assert expected.item() > 0
    assert got["ktan+feat_r1=5"].item() == pytest.approx(got["ktan+feat_r1=0"].item() + expected.item(), rel=1e-5)


def test_the_schedules_label_smoothing_reaches_the_students_cross_entropy():
    """``label_smoothing`` of the schedule (`--full label_smoothing=0.1`) softens the targets of the
    student's ce term: the same student and batch give the smoothed loss, and without it the plain one."""
    import dataclasses

    import torch.nn.functional as F

    x, y = batch()
    for smoothing in (0.2, 0.0):
        _, student, teacher = make("kd")
        step = build_step(student, teacher, get_mode("kd"), dataclasses.replace(SCHEDULE, label_smoothing=smoothing), input_shape=SHAPE, num_classes=CLASSES, steps_per_epoch=4, device=CPU)
        with torch.no_grad():
            want = F.cross_entropy(student(x), y, label_smoothing=smoothing)  # train mode, as in the step: the same batch statistics
        assert torch.isclose(step(x, y).losses["ce"], want, atol=1e-6)


def test_a_discriminator_whose_loss_is_not_finite_stops_the_run_too():
    """Before the adversarial warm-up ends the student's loss holds no discriminator term, so only
    the step's check of the discriminators' own loss can see them diverge: it must, before their
    NaN weights are ever let near the student."""
    step, student, _ = make("xu")
    with torch.no_grad():
        step.objective.logit_disc.out.weight[0, 0] = float("nan")
    before = weights(student)
    with pytest.raises(NonFiniteLossError, match="distillation loss became nan"):
        step(*batch(), adversarial=False)
    assert all(torch.equal(before[k], p) for k, p in student.named_parameters() if k in before)  # the check precedes the student's update


def test_the_step_reports_the_factor_each_adversarial_term_was_scaled_by():
    """The epoch's `adv_gate` figures (docs/DISTILLER.md) are what scaled the student's terms in
    this step: every gate open here, so every factor is 1."""
    step, _, _ = make("full")
    for gate in step.objective.gates.values():
        gate.accuracy.fill_(1.0)
    result = step(*batch(), adversarial=True)
    assert {k: v.item() for k, v in result.gates.items()} == {"adv_feat": 1.0, "adv_logit": 1.0, "adv_logit_class": 1.0}
    assert step(*batch(), adversarial=False).gates == {}  # no adversarial term, nothing scaled
