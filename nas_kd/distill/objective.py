"""What a mode trains besides the student, and the losses it adds up.

`DistillObjective` builds only the parts a mode's non-zero weights need: stage adapters (for
``feat``, ``desc``, ``adv_feat``), student- and teacher-side attention (``desc``), the feature
discriminator (``adv_feat``) and the logit discriminator (``adv_logit``). It splits its
parameters in two: `student_side` (trained with the student by its optimiser) and
`discriminators` (trained by their own optimiser in their own step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas_kd.distill import losses
from nas_kd.distill.adapters import StageAdapters, pair_stages, stage_sizes
from nas_kd.distill.attention import AttentionSqueeze, TaskHeads
from nas_kd.distill.discriminators import FeatureDiscriminator, LogitDiscriminator
from nas_kd.distill.modes import Mode

__all__ = ["TeacherOutputs", "DistillObjective"]


@dataclass
class TeacherOutputs:
    """The frozen teacher's answer for one batch: its logits and its paired stage maps (in pair
    order; empty when the mode uses no maps)."""

    logits: torch.Tensor
    maps: list[torch.Tensor]


class DistillObjective(nn.Module):
    def __init__(self, mode: Mode, student: nn.Module, teacher: nn.Module | None, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.mode = mode
        w = mode.weights
        self.pairs: list[tuple[int, int]] = []
        self.adapters: StageAdapters | None = None
        if mode.uses_maps:
            device = next(teacher.parameters()).device
            pairs = pair_stages(stage_sizes(student, input_shape, device), stage_sizes(teacher, input_shape, device))
            self.pairs = pairs if mode.stages == "all" else pairs[-1:]
            self.adapters = StageAdapters(self.pairs, student.stage_channels, teacher.stage_channels)
        paired_channels = [teacher.stage_channels[j] for _, j in self.pairs]
        self.student_attention = AttentionSqueeze(paired_channels) if w.desc else None
        self.teacher_attention = AttentionSqueeze(paired_channels) if w.desc else None
        self.task_heads = TaskHeads(paired_channels, num_classes) if w.desc else None
        self.feature_disc = FeatureDiscriminator(paired_channels[-1]) if w.adv_feat else None
        self.logit_disc = LogitDiscriminator(num_classes) if w.adv_logit else None

    @property
    def teacher_stages(self) -> list[int]:
        return [j for _, j in self.pairs]

    def student_side(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters the student's optimiser trains (adapters, attention, task heads)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(("feature_disc.", "logit_disc."))]

    def discriminators(self) -> list[nn.Module]:
        return [d for d in (self.feature_disc, self.logit_disc) if d is not None]

    def adapt(self, student_maps: list[torch.Tensor] | None, teacher: TeacherOutputs | None) -> list[torch.Tensor]:
        if self.adapters is None:
            return []
        return self.adapters(student_maps, teacher.maps)

    def discriminator_loss(self, adapted: list[torch.Tensor], student_logits: torch.Tensor, teacher: TeacherOutputs, labels: torch.Tensor) -> torch.Tensor:
        """Both discriminators' losses; pass *detached* student outputs so only they learn."""
        total = torch.zeros((), device=student_logits.device)
        if self.feature_disc is not None:
            total = total + losses.discriminator_bce(self.feature_disc(teacher.maps[-1]), self.feature_disc(adapted[-1]))
        if self.logit_disc is not None:
            # Real and fake in one batch, here and in the student's step, so the input BN
            # normalises both with the same statistics (and scale differences stay visible).
            n = len(labels)
            scores, classes = self.logit_disc(torch.cat([teacher.logits, student_logits]))
            total = total + losses.discriminator_bce(scores[:n], scores[n:])
            total = total + losses.auxiliary_ce(classes, torch.cat([labels, labels]))
            if self.mode.disc_penalty:
                total = total + losses.weight_penalty(self.logit_disc, self.mode.disc_penalty, self.mode.disc_penalty)
        return total

    def student_losses(
        self,
        student_logits: torch.Tensor,
        adapted: list[torch.Tensor],
        teacher: TeacherOutputs | None,
        labels: torch.Tensor,
        *,
        adversarial: bool,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Unweighted loss terms keyed like `LossWeights` (only those with non-zero weight;
        adversarial ones only when ``adversarial``), plus ``attn_task`` for the teacher-side
        attention's task loss (weight 1; it trains only the teacher-side modules)."""
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
            parts["feat"] = losses.feature_mse(adapted, teacher.maps)
        if w.desc:
            teacher_desc = self.teacher_attention(teacher.maps)
            tasks = [losses.cross_entropy(c, labels) for c in self.task_heads(teacher_desc)]
            parts["attn_task"] = torch.stack(tasks).mean()
            parts["desc"] = losses.descriptor_l2(self.student_attention(adapted), [d.detach() for d in teacher_desc])
        if adversarial and w.adv_feat:
            parts["adv_feat"] = losses.generator_bce(self.feature_disc(adapted[-1]))
        if adversarial and w.adv_logit:
            n = len(labels)
            scores, classes = self.logit_disc(torch.cat([teacher.logits, student_logits]))
            # AC-GAN: the student also wants its logits classified correctly by the discriminator.
            parts["adv_logit"] = losses.generator_bce(scores[n:]) + losses.auxiliary_ce(classes[n:], labels)
        return parts

    def weighted_sum(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self.mode.weights
        return sum(getattr(weights, k, 1.0) * v for k, v in parts.items())
