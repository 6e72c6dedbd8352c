"""Every loss the distiller combines, as plain functions of tensors (no modules, no state).

Reductions are means over the batch, and over vector elements where a paper says "squared L2":
normalising by the vector length keeps one loss weight meaningful across class and channel
counts (our choice; KSANC and Xu et al. do not state theirs). Inputs may be bf16 under
autocast; every loss is computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cross_entropy",
    "kd_loss",
    "logit_l1",
    "logit_l2",
    "feature_mse",
    "descriptor_l2",
    "discriminator_bce",
    "generator_bce",
    "auxiliary_ce",
    "weight_penalty",
    "reconstruction_mse",
    "r1_penalty",
]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, mean over the batch.

    The T² factor keeps the gradient's size independent of T, so the KD weight need not be
    retuned when T changes.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


def logit_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Xu et al.'s L1 between logits: mean absolute difference per logit."""
    return F.l1_loss(student_logits.float(), teacher_logits.float())


def logit_l2(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KSANC's backbone loss: squared L2 between logits, per logit (mean over batch and classes)."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def feature_mse(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], stage_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-level feature loss (KTAN's T2S loss, Zhang et al.'s feature loss): MSE between adapted
    student maps and teacher maps, averaged over the supervised stages, or summed with
    ``stage_weights`` (`feature_stage_weights`: the mean in units of each teacher map's scale)."""
    losses = torch.stack([F.mse_loss(s.float(), t.float()) for s, t in zip(student_maps, teacher_maps, strict=True)])
    # A dot product costs the launches of the mean it replaces, forward and backward.
    return losses.mean() if stage_weights is None else losses.dot(stage_weights)


def feature_stage_weights(scales: Sequence[float]) -> torch.Tensor:
    """`feature_mse`'s ``stage_weights`` for stages whose teacher maps have root mean squares
    ``scales``: the mean of each stage's MSE divided by its scale squared, so the loss does not
    change when the teacher's maps are c times as large (nas_kd.distill.map_scale)."""
    return torch.tensor([1.0 / (len(scales) * s * s) for s in scales])


def descriptor_l2(student_desc: Sequence[torch.Tensor], teacher_desc: Sequence[torch.Tensor]) -> torch.Tensor:
    """KSANC's L_is: squared L2 between squeezed descriptors (N, C) per stage, averaged over stages."""
    losses = [F.mse_loss(s.float(), t.float()) for s, t in zip(student_desc, teacher_desc, strict=True)]
    return torch.stack(losses).mean()


def reconstruction_mse(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Zhang et al.'s reconstruction loss, as the teacher was trained with it: MSE to the
    normalised input image, per pixel."""
    return F.mse_loss(reconstruction.float(), images.float())


def discriminator_bce(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's GAN loss (BCE; Xu et al. found LSGAN and WGAN unstable): teacher
    outputs are real (1), student outputs fake (0). Scores are logits of any shape."""
    real, fake = real_scores.float(), fake_scores.float()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )


def generator_bce(fake_scores: torch.Tensor) -> torch.Tensor:
    """The student's adversarial loss, in the non-saturating form: -log D(student)."""
    fake = fake_scores.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def auxiliary_ce(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The discriminator's auxiliary class prediction (AC-GAN; what stabilised Xu et al.'s training)."""
    return F.cross_entropy(class_logits.float(), labels)


def weight_penalty(module: nn.Module, l1: float, l2: float) -> torch.Tensor:
    """KSANC's L1 + L2 regulariser on a discriminator's weight matrices (not biases or BN)."""
    # All matrices as one vector: a fixed handful of ops instead of eight per matrix, forward and
    # backward (on a GPU each op is a kernel launch, and this step is launch-bound: bench/step_ops.py).
    w = torch.cat([p.flatten() for p in module.parameters() if p.ndim > 1])
    return l1 * w.abs().sum() + l2 * w.pow(2).sum()


def r1_penalty(real_scores: torch.Tensor, real_inputs: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mescheder et al.'s R1: gamma/2 * E ||d D(x) / d x||^2 at real inputs (``real_inputs`` must
    require grad and have produced ``real_scores``). A discriminator that may not be steep around
    the teacher's maps cannot separate them from the student's by an arbitrarily sharp boundary,
    which is what handed the student large, uninformative gradients (ours, docs/DISTILLER.md)."""
    (grad,) = torch.autograd.grad(real_scores.float().sum(), real_inputs, create_graph=True)
    return 0.5 * gamma * grad.float().pow(2).flatten(1).sum(1).mean()
