"""One distillation update on one batch: teacher pass, discriminator step, student step.

The order is Xu et al.'s: the discriminators learn first (on detached student outputs), then the
student learns against the updated discriminators, whose parameters are frozen for that step so
no gradient reaches them. The student's forward pass is shared by both steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from nas_kd.device import autocast
from nas_kd.distill.objective import DistillObjective, TeacherOutputs
from nas_kd.train import check_finite

__all__ = ["DistillStep", "teacher_outputs", "frozen"]


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: torch.Tensor, stages: list[int]) -> TeacherOutputs:
    """The frozen teacher's logits and the maps of ``stages``, computed once per batch.

    ``no_grad`` rather than ``inference_mode``: the loss graphs save these tensors for backward,
    which inference tensors forbid, and a copy per batch would cost memory traffic for nothing.
    """
    with autocast(x.device):
        if stages:
            maps, logits = teacher.forward_stages(x)
            return TeacherOutputs(logits, [maps[j] for j in stages])
        return TeacherOutputs(teacher(x), [])


@contextlib.contextmanager
def frozen(modules: list[nn.Module]) -> Iterator[None]:
    """Stop gradients into ``modules``' parameters for the duration (they still run forward)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class DistillStep:
    """Callable ``step(x, y, adversarial) -> {term: detached loss}`` for one batch."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        objective: DistillObjective,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        disc_optimizer: torch.optim.Optimizer | None,
        label_smoothing: float = 0.0,
    ):
        self.student, self.teacher, self.objective = student, teacher, objective
        self.optimizer, self.scheduler, self.disc_optimizer = optimizer, scheduler, disc_optimizer
        self.label_smoothing = label_smoothing

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], TeacherOutputs | None]:
        """(student logits, adapted student maps, teacher outputs) for a batch."""
        t = teacher_outputs(self.teacher, x, self.objective.teacher_stages) if self.objective.mode.uses_teacher else None
        with autocast(x.device):
            if self.objective.adapters is not None:
                maps, logits = self.student.forward_stages(x)
                return logits, self.objective.adapt(maps, t), t
            return self.student(x), [], t

    def discriminator_update(self, adapted: list[torch.Tensor], logits: torch.Tensor, t: TeacherOutputs, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step of the discriminators on detached student outputs; returns the loss."""
        with autocast(y.device):
            loss = self.objective.discriminator_loss([a.detach() for a in adapted], logits.detach(), t, y)
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_optimizer.step()
        # Drop the gradients now: the student's step must find none on the discriminators.
        self.disc_optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def student_losses(self, logits, adapted, t, y, adversarial: bool) -> dict[str, torch.Tensor]:
        with frozen(self.objective.discriminators()), autocast(y.device):
            return self.objective.student_losses(logits, adapted, t, y, adversarial=adversarial, label_smoothing=self.label_smoothing)

    def student_update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, adversarial: bool = True) -> dict[str, torch.Tensor]:
        logits, adapted, t = self.forward(x)
        disc_loss = self.discriminator_update(adapted, logits, t, y) if self.disc_optimizer is not None else None
        parts = self.student_losses(logits, adapted, t, y, adversarial)
        loss = self.objective.weighted_sum(parts)
        # One host sync per step covers both losses.
        check_finite(loss.detach() if disc_loss is None else loss.detach() + disc_loss, "distillation loss")
        self.student_update(loss)
        out = {k: v.detach() for k, v in parts.items()}
        if disc_loss is not None:
            out["disc"] = disc_loss
        return out
