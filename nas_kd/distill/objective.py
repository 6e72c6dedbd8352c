"""What a mode trains besides the student, and the losses it adds up.

`DistillObjective` builds only the parts a mode's non-zero weights need: stage adapters (for
``feat``, ``desc``, ``adv_feat``, ``recon``), the frozen task-driven attention (``desc``), the
feature discriminator (``adv_feat``) and the logit discriminator (``adv_logit``) with their
accuracy gates. It splits its parameters in two: `student_side` (trained with the student by its
optimiser: the adapters) and `discriminators` (trained by their own optimiser in their own step).
The attention and the teacher's decoder are frozen and trained by nobody.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas_kd.distill import losses
from nas_kd.distill.adapters import NONE, Adapted, StageAdapters, pair_stages, pool_to, stage_sizes
from nas_kd.distill.attention_fit import load_teacher_attention
from nas_kd.distill.discriminators import (
    AccuracyGate,
    FeatureDiscriminator,
    LogitDiscriminator,
    feature_view,
    verdict_accuracy,
)
from nas_kd.distill.modes import Mode
from nas_kd.distill.outputs import TeacherOutputs

__all__ = ["DistillObjective", "TERM_WEIGHT", "RECON_SAMPLES"]

# Images per batch whose reconstruction the ``recon`` term scores (ours), at most: the first of
# those the map terms read (`Mode.map_samples`). The teacher's decoder costs ~7M MACs per 28×28
# image (version 2; version 1 worked at twice the input resolution, ~15M), over ten times a
# 0.5M-MAC student's forward; on all 128 images a zhang step took 8x a ce step with version 1.
RECON_SAMPLES = 32

# Loss parts that have no mode weight of their own: the mode weight that scales them.
TERM_WEIGHT: dict[str, str] = {
    "adv_logit_class": "adv_logit",  # the AC-GAN class half of the logit adversarial term
}


def _plus(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    return term if total is None else total + term


class DistillObjective(nn.Module):
    def __init__(
        self,
        mode: Mode,
        student: nn.Module,
        teacher: nn.Module | None,
        input_shape: tuple[int, int, int],
        num_classes: int,
        teacher_attention: dict[str, torch.Tensor] | None = None,
        map_scales: Sequence[float] | None = None,
    ):
        """``map_scales``: the root mean square of each teacher stage map
        (`nas_kd.distill.map_scale.teacher_map_scales`), the unit of the map terms; None: 1."""
        super().__init__()
        self.mode = mode
        w = mode.weights
        self.pairs: list[tuple[int, int]] = []
        self.adapters: StageAdapters | None = None
        if mode.uses_maps:
            device = next(teacher.parameters()).device
            teacher_sizes = stage_sizes(teacher, input_shape, device)
            pairs = pair_stages(stage_sizes(student, input_shape, device), teacher_sizes)
            self.pairs = pairs if mode.stages == "all" else pairs[-1:]
            self.adapters = StageAdapters(self.pairs, student.stage_channels, teacher.stage_channels, teacher_sizes, map_scales)
        # Derived from the scales, so not saved; a buffer, so it moves with the objective.
        self.register_buffer("feat_stage_weights", losses.feature_stage_weights(self.adapters.scales) if mode.uses_maps else None, persistent=False)
        self.attention = None
        if w.desc:
            if teacher_attention is None:
                raise ValueError("a mode with desc needs the fitted teacher attention: see nas_kd.distill.attention_fit")
            # Frozen, and the same function on both sides (see nas_kd.distill.attention).
            self.attention = load_teacher_attention(teacher_attention, teacher, num_classes).subset(self.teacher_stages).requires_grad_(False)
        self.feature_disc = FeatureDiscriminator(teacher.stage_channels[self.pairs[-1][1]]) if w.adv_feat else None
        self.logit_disc = LogitDiscriminator(num_classes) if w.adv_logit else None
        self.gates = nn.ModuleDict()
        if w.adv_feat:
            self.gates["adv_feat"] = AccuracyGate(0.5)
        if w.adv_logit:
            self.gates["adv_logit"] = AccuracyGate(0.5)
            self.gates["adv_logit_class"] = AccuracyGate(1 / num_classes)
        # A frozen teacher part: kept out of the module tree so nothing trains, moves or saves it
        # with the objective.
        self._decoder = (teacher.decoder,) if w.recon else ()

    @property
    def teacher_stages(self) -> list[int]:
        """The paired teacher stages, shallow to deep."""
        return [j for _, j in self.pairs]

    @property
    def map_stages(self) -> list[int]:
        """Teacher stages whose maps the losses read (in pair order)."""
        return self.teacher_stages if self.mode.uses_teacher_maps else []

    @property
    def desc_stages(self) -> list[int]:
        return self.teacher_stages if self.mode.weights.desc else []

    def student_side(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters the student's optimiser trains (the adapters)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(("feature_disc.", "logit_disc.", "attention."))]

    def discriminators(self) -> list[nn.Module]:
        return [d for d in (self.feature_disc, self.logit_disc) if d is not None]

    def adapt(self, student_maps: list[torch.Tensor]) -> Adapted:
        """The adapted maps of the batch's first ``mode.map_samples`` images (see `Mode`)."""
        return NONE if self.adapters is None else self.adapters(student_maps, self.mode.map_samples)

    def discriminator_loss(self, adapted: Adapted, student_logits: torch.Tensor, teacher: TeacherOutputs, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both discriminators' loss and their accuracies on this batch (keyed like the gates);
        pass *detached* student outputs so only the discriminators learn."""
        total, accuracy = None, {}  # None until the first term: no zero tensor to add to
        if self.feature_disc is not None:
            unit = self.adapters.scales[-1]
            real_view = feature_view(pool_to(teacher.maps[-1], adapted.coarse.shape[-2:]), unit=unit)
            if self.mode.feat_r1:
                real_view = real_view.detach().requires_grad_(True)
            # Both sides in one pass (no normalisation layers, so each image's score is the same
            # as alone): half the discriminator's launches, forward and backward, on a GPU step
            # bound by its launches (bench/step_ops.py). R1's gradient still reaches the real half only.
            scores = self.feature_disc(torch.cat([real_view, feature_view(adapted.coarse, memo=adapted.view_memo, unit=unit)]))
            real, fake = scores[: len(real_view)], scores[len(real_view) :]
            total = _plus(total, losses.discriminator_bce(real, fake))
            if self.mode.feat_r1:
                total = total + losses.r1_penalty(real, real_view, self.mode.feat_r1)
            accuracy["adv_feat"] = verdict_accuracy(real.detach(), fake.detach())
        if self.logit_disc is not None:
            self.logit_disc.standardise.observe(teacher.logits)
            scores, classes = self._judge_logits(teacher.logits, student_logits)
            n = len(labels)
            total = _plus(total, losses.discriminator_bce(scores[:n], scores[n:])) + losses.auxiliary_ce(classes, torch.cat([labels, labels]))
            accuracy["adv_logit"] = verdict_accuracy(scores[:n].detach(), scores[n:].detach())
            accuracy["adv_logit_class"] = (classes[:n].detach().argmax(1) == labels).float().mean()
            if self.mode.disc_penalty:
                total = total + losses.weight_penalty(self.logit_disc, self.mode.disc_penalty, self.mode.disc_penalty)
        return total, accuracy

    def _judge_logits(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Real and fake in one batch, here and in the student's step, so the BN layers inside
        # see both with the same statistics and the discriminator is the same function in both.
        return self.logit_disc(torch.cat([teacher_logits, student_logits]))

    def observe(self, accuracy: dict[str, torch.Tensor]) -> None:
        """Feed a discriminator step's accuracies to the gates."""
        for key, value in accuracy.items():
            self.gates[key].observe(value)

    def gate_factors(self) -> dict[str, torch.Tensor]:
        return {k: g.factor() for k, g in self.gates.items()}

    def student_losses(
        self,
        student_logits: torch.Tensor,
        adapted: Adapted,
        teacher: TeacherOutputs | None,
        labels: torch.Tensor,
        images: torch.Tensor,
        *,
        adversarial: bool,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Unweighted loss terms keyed like `LossWeights` (only those with non-zero weight;
        adversarial ones only when ``adversarial``), plus the parts in `TERM_WEIGHT`."""
        w, parts = self.mode.weights, {}
        if w.ce:
            parts["ce"] = losses.cross_entropy(student_logits, labels, label_smoothing)
        if w.kd:
            parts["kd"] = losses.kd_loss(student_logits, teacher.logits, self.mode.temperature)
        if w.l1:
            parts["l1"] = losses.logit_l1(student_logits, teacher.logits)
        if w.l2:
            parts["l2"] = losses.logit_l2(student_logits, teacher.logits)
        if w.feat:
            parts["feat"] = losses.feature_mse(adapted.maps, teacher.maps, self.feat_stage_weights)
        if w.desc:
            parts["desc"] = losses.descriptor_l2(self.attention.squeeze(adapted.maps), teacher.descriptors)
        if w.recon:
            # The decoder was trained on the teacher's deepest map, which is post-ReLU in every
            # registry teacher (the only ones with a decoder). Scored on the first RECON_SAMPLES
            # images only: an unbiased estimate of the batch mean at a fraction of the cost.
            deepest = adapted.maps[-1][:RECON_SAMPLES]
            parts["recon"] = losses.reconstruction_mse(self._decoder[0](torch.relu(deepest)), images[: len(deepest)])
        if adversarial and w.adv_feat:
            parts["adv_feat"] = losses.generator_bce(self.feature_disc(feature_view(adapted.coarse, memo=adapted.view_memo, unit=self.adapters.scales[-1])))
        if adversarial and w.adv_logit:
            n = len(labels)
            scores, classes = self._judge_logits(teacher.logits, student_logits)
            parts["adv_logit"] = losses.generator_bce(scores[n:])
            # AC-GAN: the student also wants its logits classified correctly by the discriminator.
            parts["adv_logit_class"] = losses.auxiliary_ce(classes[n:], labels)
        return parts

    def weight(self, term: str) -> float:
        return getattr(self.mode.weights, TERM_WEIGHT.get(term, term))

    def weighted_sum(self, parts: dict[str, torch.Tensor], gate_factors: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Σ weight × part, adversarial parts also times their gate's factor (``gate_factors``: as
        `gate_factors` returns them, when the caller has them already)."""
        if gate_factors is None and any(t in self.gates for t in parts):
            gate_factors = self.gate_factors()
        total = None
        for term, value in parts.items():
            factor = self.weight(term) * gate_factors[term] if term in self.gates else self.weight(term)
            total = _plus(total, factor * value)
        return total
