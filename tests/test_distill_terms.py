"""Every loss term of every mode reaches the student as documented.

Each term is recomputed here from its formula in docs/DISTILLER.md, on inputs taken from the
right place (the live teacher, the stage the docs name, the image), and compared with what the
objective computes: value and gradient with respect to the student's weights. A term that is
detached, computed on the wrong tensor or stage, or has real and fake swapped fails here; one
that is zero-weighted or dropped from the sum fails the whole-step test.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_distill_step import CLASSES, attention_state, batch, make

from nas_kd.distill import get_mode
from nas_kd.distill.attention_fit import load_teacher_attention
from nas_kd.distill.discriminators import GATE_MARGIN, GATE_RAMP
from nas_kd.distill.objective import RECON_SAMPLES

# The terms each mode's student loss is made of (hard-coded: a preset weight silently set to
# zero must fail a test, not shrink this list).
EXPECTED = {
    "kd": {"ce", "kd"},
    "ktan": {"ce", "kd", "feat", "adv_feat"},
    "ksanc": {"ce", "l2", "desc", "adv_logit", "adv_logit_class"},
    "xu": {"ce", "l1", "adv_logit", "adv_logit_class"},
    "zhang": {"ce", "kd", "feat", "recon", "adv_feat"},
    "full": {"ce", "kd", "feat", "desc", "adv_feat", "adv_logit", "adv_logit_class"},
}
# The map terms on part of each batch (`Mode.map_samples`): fewer images than the test batch.
EXPECTED |= {f"{name}+map_samples=24": EXPECTED[name] for name in ("ksanc", "zhang", "full")}
# Teacher stages each term reads, for the TINY student (stages 16, 8, 4, 4 px) against resnet8
# (16, 8, 4 px): pairs (0, 0), (1, 1), (3, 2); ktan uses the deepest pair only.
PAIRS = {"ktan": [(3, 2)], "ksanc": [(0, 0), (1, 1), (3, 2)], "zhang": [(0, 0), (1, 1), (3, 2)], "full": [(0, 0), (1, 1), (3, 2)]}
ADVERSARIAL = {"adv_feat", "adv_logit", "adv_logit_class"}


def open_gates(step):
    """Make every discriminator count as accurate, so adversarial terms reach the student."""
    for gate in step.objective.gates.values():
        gate.accuracy.fill_(1.0)


def no_dropout(step):
    """The logit discriminator's dropout would make two evaluations differ."""
    for m in step.objective.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def view(m):
    """feature_view, written out: per channel, minus its median over the batch and positions,
    ReLU, divided by its root mean square (both statistics held constant for the gradient)."""
    channels = range(m.shape[1])
    with torch.no_grad():
        median = torch.stack([m[:, c].median() for c in channels]).view(1, -1, 1, 1)
    d = m - median
    r = torch.where(d > 0, d, torch.zeros_like(d))  # the median itself maps to 0 with no gradient
    with torch.no_grad():
        rms = torch.stack([(r[:, c] ** 2).mean().add(1e-5).sqrt() for c in channels]).view(1, -1, 1, 1)
    return r / rms


def reference_terms(step, teacher, x, y, mode_name):
    """The documented formulas, evaluated with the step's own trainable parts."""
    o, student, w = step.objective, step.student, get_mode(mode_name)
    maps, s = student.forward_stages(x)
    with torch.no_grad():
        t_maps, t = teacher.forward_stages(x)
    # Map terms read the batch's first map_samples images only (all when None); logit terms read all of it.
    n = w.map_samples
    maps, t_maps = [m[:n] for m in maps], [m[:n] for m in t_maps]
    pairs = PAIRS.get(w.name, [])
    stages = [j for _, j in pairs]
    adapters = o.adapters.adapters if o.adapters else []
    adapted = [a(maps[i], t_maps[j].shape[-2:]) for a, (i, j) in zip(adapters, pairs, strict=True)]
    # The deepest pair at the coarser resolution (the student's, 4 px, against the teacher's 4 px
    # for TINY: no resizing, but the discriminator must see the pre-upsampling map).
    coarse = adapters[-1].coarse(maps[pairs[-1][0]], t_maps[stages[-1]].shape[-2:]) if pairs else None
    T = w.temperature
    out = {"ce": F.cross_entropy(s, y)}
    p_t = F.softmax(t / T, 1)
    out["kd"] = T * T * (p_t * (torch.log(p_t) - F.log_softmax(s / T, 1))).sum(1).mean()
    out["l1"] = (s - t).abs().mean()
    out["l2"] = ((s - t) ** 2).mean()
    if adapted:
        out["feat"] = torch.stack([((a - t_maps[j]) ** 2).mean() for a, j in zip(adapted, stages, strict=True)]).mean()
    if o.attention is not None:
        # The teacher's fitted attention, loaded afresh, summarises both sides.
        fitted = load_teacher_attention(attention_state(teacher), teacher, CLASSES).subset(stages)
        t_desc = fitted.squeeze([t_maps[j] for j in stages])
        s_desc = fitted.squeeze(adapted)
        out["desc"] = torch.stack([((a - b) ** 2).mean() for a, b in zip(s_desc, t_desc, strict=True)]).mean()
    if getattr(teacher, "decoder", None) is not None:
        r = min(RECON_SAMPLES, len(adapted[-1]))
        out["recon"] = ((teacher.decoder(adapted[-1][:r].clamp(min=0)) - x[:r]) ** 2).mean()
    if o.feature_disc is not None:
        out["adv_feat"] = F.softplus(-o.feature_disc(view(coarse))).mean()  # -log sigmoid: "call it real"
    if o.logit_disc is not None:
        scores, classes = o.logit_disc(torch.cat([t, s]))
        n = len(y)
        out["adv_logit"] = F.softplus(-scores[n:]).mean()
        out["adv_logit_class"] = F.cross_entropy(classes[n:], y)
    return out


def student_grads(loss, student):
    params = [p for p in student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def close(a, b):
    return all(torch.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(a, b, strict=True))


def norm(grads):
    return sum(float(g.norm()) for g in grads)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_term_matches_its_formula_in_value_and_student_gradient(name):
    step, student, teacher = make(name)
    no_dropout(step)
    open_gates(step)
    x, y = batch(40)  # more than RECON_SAMPLES and map_samples=24, so both subsamples are exercised
    logits, adapted, t = step.forward(x)
    if step.disc_optimizer is not None:
        step.discriminator_update(adapted, logits, t, y)
    parts = step.student_losses(logits, adapted, t, y, x, adversarial=True)
    assert set(parts) == EXPECTED[name]
    ref = reference_terms(step, teacher, x, y, name)
    for term, value in parts.items():
        assert value.item() == pytest.approx(ref[term].item(), rel=1e-4, abs=1e-6), term
        got, want = student_grads(value, student), student_grads(ref[term], student)
        assert norm(got) > 0, f"{term} does not reach the student"
        assert close(got, want), f"{term}: the student's gradient differs from the formula's"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_step_applies_the_weighted_sum_of_all_terms(name):
    """The student's gradient after a real step equals Σ weight × term of the formulas,
    computed on a twin that took the same discriminator step."""
    step, student, teacher = make(name)
    no_dropout(step)
    open_gates(step)
    twin = copy.deepcopy(step)
    x, y = batch(40)  # more than RECON_SAMPLES and map_samples=24, so both subsamples are exercised
    step(x, y)
    got = [p.grad for p in student.parameters() if p.requires_grad]

    logits, adapted, t = twin.forward(x)
    if twin.disc_optimizer is not None:
        twin.discriminator_update(adapted, logits, t, y)
    ref = reference_terms(twin, twin.teacher, x, y, name)
    weights = get_mode(name).weights
    weight_of = {"adv_logit_class": weights.adv_logit}
    total = sum(weight_of.get(k, getattr(weights, k, None)) * ref[k] for k in EXPECTED[name])
    want = student_grads(total, twin.student)
    assert close(got, want)


@pytest.mark.parametrize("name", ["ktan", "xu", "full"])
def test_closed_gates_keep_adversarial_terms_from_the_student(name):
    """A discriminator at chance (running accuracy 0.5) must not push the student."""
    step, student, _ = make(name)
    no_dropout(step)
    x, y = batch(40)  # more than RECON_SAMPLES and map_samples=24, so both subsamples are exercised
    logits, adapted, t = step.forward(x)
    parts = step.student_losses(logits, adapted, t, y, x, adversarial=True)
    for gate in step.objective.gates.values():
        gate.accuracy.fill_(gate.chance)
    closed = step.objective.weighted_sum(parts)
    without = step.objective.weighted_sum({k: v for k, v in parts.items() if k not in ADVERSARIAL})
    assert close(student_grads(closed, student), student_grads(without, student))
    open_gates(step)
    opened = step.objective.weighted_sum(parts)
    assert not close(student_grads(opened, student), student_grads(without, student))


def true_bce(real, fake):
    """The discriminator's objective with teacher = real (1), student = fake (0)."""
    return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def full_batch():
    """A `full` step (no dropout) and one batch's forward pass through it."""
    step, _, _ = make("full")
    no_dropout(step)
    x, y = batch(40)  # more than RECON_SAMPLES and map_samples=24, so both subsamples are exercised
    logits, adapted, t = step.forward(x)
    return step, step.objective, y, logits, adapted, t


def test_discriminator_steps_improve_their_real_vs_fake_objective():
    step, o, y, logits, adapted, t = full_batch()

    def feature_bce():
        with torch.no_grad():
            return true_bce(o.feature_disc(view(t.maps[-1])), o.feature_disc(view(adapted.coarse))).item()

    def logit_bce():
        with torch.no_grad():
            scores, _ = o.logit_disc(torch.cat([t.logits, logits]))
            return true_bce(scores[: len(y)], scores[len(y) :]).item()

    o.logit_disc.standardise.observe(t.logits)  # what the update does first; keeps "before" comparable
    before = feature_bce(), logit_bce()
    for _ in range(3):
        step.discriminator_update(adapted, logits, t, y)
    after = feature_bce(), logit_bce()
    assert after[0] < before[0] and after[1] < before[1]


def test_reported_accuracies_are_those_of_the_verdicts_before_the_update():
    step, o, y, logits, adapted, t = full_batch()
    feature_disc, logit_disc = copy.deepcopy(o.feature_disc), copy.deepcopy(o.logit_disc)
    with torch.no_grad():
        real, fake = feature_disc(view(t.maps[-1])), feature_disc(view(adapted.coarse))
        logit_disc.standardise.observe(t.logits)  # as the update does before judging
        scores, classes = logit_disc(torch.cat([t.logits, logits]))
    before = {k: g.accuracy.clone() for k, g in o.gates.items()}
    _, accuracy = step.discriminator_update(adapted, logits, t, y)
    n = len(y)
    # The logit discriminator's yardstick comes from the teacher's logits alone.
    standardise = o.logit_disc.standardise
    assert standardise.count.item() == n and torch.allclose(standardise.total.float(), t.logits.sum(0), atol=1e-4)
    for key, gate in o.gates.items():  # each verdict feeds its own gate's running accuracy
        assert gate.accuracy.item() == pytest.approx(0.9 * before[key].item() + 0.1 * accuracy[key].item())
    assert accuracy["adv_feat"].item() == pytest.approx(0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).item())
    assert accuracy["adv_logit"].item() == pytest.approx(0.5 * ((scores[:n] > 0).float().mean() + (scores[n:] < 0).float().mean()).item())
    assert accuracy["adv_logit_class"].item() == pytest.approx((classes[:n].argmax(1) == y).float().mean().item())


def test_the_feature_discriminator_judges_both_sides_at_the_coarser_resolution():
    """A student whose deepest map (2 px) is smaller than the teacher's (4 px): the
    discriminator sees the adapted map *before* upsampling and the teacher's area-pooled to it."""
    import dataclasses

    from test_distill_step import SCHEDULE, SHAPE, TINY

    from nas_kd.distill import get_mode
    from nas_kd.distill.trainer import build_step
    from nas_kd.models.student import build_student
    from nas_kd.models.teachers import build_teacher

    torch.manual_seed(0)
    deep = dataclasses.replace(TINY, stages=(*TINY.stages[:-1], dataclasses.replace(TINY.stages[-1], stride=2)))
    student, teacher = build_student(deep, 1, CLASSES), build_teacher("resnet8", 1, CLASSES).eval().requires_grad_(False)
    step = build_step(student, teacher, get_mode("ktan"), SCHEDULE, input_shape=SHAPE, num_classes=CLASSES, steps_per_epoch=4, device=torch.device("cpu"))
    open_gates(step)
    o = step.objective
    x, y = batch(40)
    logits, adapted, t = step.forward(x)
    assert adapted.maps[-1].shape[-2:] == (4, 4) and adapted.coarse.shape[-2:] == (2, 2)
    feature_disc = copy.deepcopy(o.feature_disc)
    n = o.mode.map_samples  # both sides: the batch's first n images
    with torch.no_grad():
        pooled = F.avg_pool2d(teacher.forward_stages(x)[0][-1][:n], 2)  # 4 px -> 2 px, area
        real, fake = feature_disc(view(pooled)), feature_disc(view(adapted.coarse))
    _, accuracy = step.discriminator_update(adapted, logits, t, y)
    assert accuracy["adv_feat"].item() == pytest.approx(0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).item())
    maps, _ = student.forward_stages(x)
    coarse = o.adapters.adapters[-1].bn(o.adapters.adapters[-1].conv(maps[-1][:n]))  # no resize: 2 px is the coarser
    want = F.softplus(-o.feature_disc(view(coarse))).mean()
    got = step.student_losses(logits, adapted, t, y, x, adversarial=True)["adv_feat"]
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert close(student_grads(got, student), student_grads(want, student))


def test_the_discriminators_loss_is_its_formula_in_value_and_gradient():
    """Real and fake maps judged in one pass of the feature discriminator, R1 on the real half
    alone, the logit discriminator's yardstick refreshed from the teacher's logits, the penalty on
    all of its matrices: the loss and every discriminator gradient equal the formula computed piece
    by piece, each side in its own pass."""
    from nas_kd.distill.adapters import pool_to

    step, o, y, logits, adapted, t = full_batch()
    ref = copy.deepcopy(o)
    loss, _ = o.discriminator_loss(adapted.detach(), logits.detach(), t, y)
    discs = [p for d in o.discriminators() for p in d.parameters()]
    got = torch.autograd.grad(loss, discs)

    mode, n = o.mode, len(y)
    real_view = view(pool_to(t.maps[-1], adapted.coarse.shape[-2:])).detach().requires_grad_(True)
    real, fake = ref.feature_disc(real_view), ref.feature_disc(view(adapted.coarse.detach()))
    (slope,) = torch.autograd.grad(real.sum(), real_view, create_graph=True)
    r1 = 0.5 * mode.feat_r1 * slope.pow(2).flatten(1).sum(1).mean()
    ref.logit_disc.standardise.observe(t.logits)
    scores, classes = ref.logit_disc(torch.cat([t.logits, logits.detach()]))
    matrices = [p for p in ref.logit_disc.parameters() if p.ndim > 1]
    assert len(matrices) == 4
    penalty = sum(mode.disc_penalty * (w.abs().sum() + w.pow(2).sum()) for w in matrices)
    want = 0.5 * true_bce(real, fake) + r1 + 0.5 * true_bce(scores[:n], scores[n:]) + F.cross_entropy(classes, torch.cat([y, y])) + penalty
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    expected = torch.autograd.grad(want, [p for d in ref.discriminators() for p in d.parameters()])
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_each_gate_opens_above_the_chance_level_of_its_own_verdict():
    """Real/fake verdicts are at chance at 0.5, the auxiliary class prediction at 1/classes: a
    class accuracy of 0.3 over 10 classes is well above chance (the class term pushes at full
    weight), a real/fake accuracy of 0.3 is below it (its term stays shut)."""
    objective = make("full")[0].objective
    for gate in objective.gates.values():
        gate.accuracy.fill_(0.3)
    factors = {k: float(v) for k, v in objective.gate_factors().items()}
    assert factors == {"adv_feat": 0.0, "adv_logit": 0.0, "adv_logit_class": 1.0}
    # Just above the class chance plus the margin, the class term's push has begun to grow.
    objective.gates["adv_logit_class"].accuracy.fill_(1 / CLASSES + GATE_MARGIN + GATE_RAMP / 2)
    assert objective.gate_factors()["adv_logit_class"].item() == pytest.approx(0.5)
