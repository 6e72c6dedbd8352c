"""One distillation update on one batch: teacher outputs, discriminator step, student step.

The order is Xu et al.'s: the discriminators learn first (on detached student outputs), then the
student learns against the updated discriminators, whose parameters are frozen for that step so
no gradient reaches them. The student's forward pass is shared by both steps. The teacher's
outputs come from a `TeacherCache` when there is one, else from a live pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import record_function

from nas_kd.device import autocast
from nas_kd.distill.adapters import NONE, Adapted
from nas_kd.distill.cache import TeacherCache
from nas_kd.distill.objective import DistillObjective
from nas_kd.distill.outputs import TeacherOutputs, teacher_outputs
from nas_kd.train import check_finite

__all__ = ["DistillStep", "StepResult", "frozen", "PARTS"]

# The step's parts, as the profiler ranges `DistillStep.__call__` names them ("distill.<part>").
PARTS = ("forward", "discriminator_update", "student_losses", "student_update")


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


@dataclass(frozen=True)
class StepResult:
    """Detached per-batch figures, left on the device (the trainer reads them once per epoch)."""

    losses: dict[str, torch.Tensor]  # unweighted student terms, plus "disc" for the discriminators' loss
    disc_accuracy: dict[str, torch.Tensor]  # per verdict (adv_feat, adv_logit, adv_logit_class), before this step's update
    gates: dict[str, torch.Tensor]  # the factor each adversarial term was scaled by
    checked: torch.Tensor | None = None  # the value the NaN/inf check reads (student's weighted loss + discriminators')


class DistillStep:
    """Callable ``step(x, y, adversarial, index=, flipped=) -> StepResult`` for one batch."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        objective: DistillObjective,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        disc_optimizer: torch.optim.Optimizer | None,
        label_smoothing: float = 0.0,
        cache: TeacherCache | None = None,
    ):
        self.student, self.teacher, self.objective = student, teacher, objective
        self.optimizer, self.scheduler, self.disc_optimizer = optimizer, scheduler, disc_optimizer
        self.label_smoothing, self.cache = label_smoothing, cache
        # A step captured in a CUDA graph (nas_kd.distill.graphed) checks the returned `checked`
        # after each replay instead: a check inside the capture would be frozen into it.
        self.check_inside = True

    def teacher_outputs(self, x: torch.Tensor, index: torch.Tensor | None, flipped: torch.Tensor | None) -> TeacherOutputs | None:
        o = self.objective
        if not o.mode.uses_teacher:
            return None
        if self.cache is not None:
            if index is None or flipped is None:
                raise ValueError("a step with a teacher cache needs each batch's example indices and flip flags (DeviceLoader.batches)")
            return self.cache.lookup(index, flipped, o.map_stages, o.desc_stages, o.mode.map_samples)
        return teacher_outputs(self.teacher, x, o.map_stages, o.attention, o.desc_stages, o.mode.map_samples)

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None, flipped: torch.Tensor | None = None) -> tuple[torch.Tensor, Adapted, TeacherOutputs | None]:
        """(student logits, adapted student maps, teacher outputs) for a batch."""
        t = self.teacher_outputs(x, index, flipped)
        with autocast(x.device):
            if self.objective.adapters is not None:
                maps, logits = self.student.forward_stages(x)
                return logits, self.objective.adapt(maps), t
            return self.student(x), NONE, t

    def discriminator_update(self, adapted: Adapted, logits: torch.Tensor, t: TeacherOutputs, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step of the discriminators on detached student outputs; feeds the gates.
        Returns the loss and the accuracies measured before the update."""
        with autocast(y.device):
            loss, accuracy = self.objective.discriminator_loss(adapted.detach(), logits.detach(), t, y)
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_optimizer.step()
        # Drop the gradients now: the student's step must find none on the discriminators.
        self.disc_optimizer.zero_grad(set_to_none=True)
        self.objective.observe(accuracy)
        return loss.detach(), accuracy

    def student_losses(self, logits, adapted, t, y, x, adversarial: bool) -> dict[str, torch.Tensor]:
        with frozen(self.objective.discriminators()), autocast(y.device):
            return self.objective.student_losses(logits, adapted, t, y, x, adversarial=adversarial, label_smoothing=self.label_smoothing)

    def student_update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, adversarial: bool = True, *, index: torch.Tensor | None = None, flipped: torch.Tensor | None = None) -> StepResult:
        # The named ranges (PARTS) let a profile say which part of the step launches what
        # (bench.gpu_step); outside a profile each costs ~11 us on this project's 2-core CPU,
        # ~45 us a step: 0.1% of the 38 ms GPU step measured 2026-12-04.
        with record_function("distill.forward"):
            logits, adapted, t = self.forward(x, index, flipped)
        with record_function("distill.discriminator_update"):
            disc_loss, accuracy = self.discriminator_update(adapted, logits, t, y) if self.disc_optimizer is not None else (None, {})
        with record_function("distill.student_losses"):
            parts = self.student_losses(logits, adapted, t, y, x, adversarial)
            factors = self.objective.gate_factors()
            gates = {k: v.detach() for k, v in factors.items() if k in parts}
            loss = self.objective.weighted_sum(parts, factors)
        # One check per step covers both losses.
        checked = loss.detach() if disc_loss is None else loss.detach() + disc_loss
        if self.check_inside:
            check_finite(checked, "distillation loss")
        with record_function("distill.student_update"):
            self.student_update(loss)
        out = {k: v.detach() for k, v in parts.items()}
        if disc_loss is not None:
            out["disc"] = disc_loss
        return StepResult(out, accuracy, gates, checked)
