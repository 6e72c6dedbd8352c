"""KSANC's teacher-side attention, fitted once on the frozen teacher (our choice of how).

`fit_teacher_attention` trains a `TeacherAttention` over *every* teacher stage (any student's
pairing then picks its subset) by the task loss alone: cross-entropy of per-stage linear heads on
the squeezed descriptors, on the loader's un-augmented training images, teacher frozen in eval
mode. It returns a state dict of CPU tensors, which a caller may store beside the teacher
checkpoint and pass back (``train(..., teacher_attention=)`` or ``TeacherCache(...,
attention_state=)``) so that it is paid once per teacher and data.

The fit is deterministic for a seed on the CPU whatever the number of torch threads. The teacher's
passes use them all and do not depend on their number; the squeeze, its heads and their updates
run on one, since their reductions round differently on two (the fitted weights moved by up to
2e-3, so a teacher cache filled on every core no longer matched a run that filled its own on one
thread). The descriptors of a fitted squeeze are the same on any count.

Why fitted and frozen: trained jointly during distillation, the target descriptors drift
(L_is rose from 0.53 to 2.65 over one quick run), and trained through L_is they would move toward
what the student finds easy instead of what the task needs.

Cost: ``epochs`` forward passes of the teacher over the examples, no backward through it.
"""

from __future__ import annotations

import torch
from torch import nn

from nas_kd.data import DeviceLoader
from nas_kd.device import autocast, one_thread
from nas_kd.distill.attention import TeacherAttention
from nas_kd.distill.map_scale import teacher_map_scales

__all__ = ["fit_teacher_attention", "load_teacher_attention", "FIT_EPOCHS", "FIT_LR"]

FIT_EPOCHS = 3  # passes over the training examples
FIT_LR = 3e-3  # Adam; the heads are linear and the squeeze small, so a few passes suffice


def fit_teacher_attention(
    teacher: nn.Module,
    loader: DeviceLoader,
    num_classes: int,
    *,
    seed: int = 0,
    epochs: int = FIT_EPOCHS,
    lr: float = FIT_LR,
) -> dict[str, torch.Tensor]:
    """The fitted `TeacherAttention`'s state dict (CPU) for ``teacher`` on ``loader``'s examples."""
    device = loader.device
    teacher.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the initial weights, without disturbing the caller's RNG
        module = TeacherAttention(teacher.stage_channels, num_classes).to(device)
    module.squeeze.stage_scale.copy_(torch.tensor(teacher_map_scales(teacher, loader)))
    order_rng = torch.Generator(device=device)
    order_rng.manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    n = loader.num_examples
    for _ in range(epochs):
        order = torch.randperm(n, device=device, generator=order_rng)
        for start in range(0, n, loader.batch_size):
            index = order[start : start + loader.batch_size]
            with torch.no_grad(), autocast(device):
                maps, _ = teacher.forward_stages(loader.view(index, flip=False))
            with one_thread():  # the fit is the same on any number of threads (module docstring)
                loss = module.task_loss(module.squeeze(maps), loader.y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_teacher_attention(state: dict[str, torch.Tensor], teacher: nn.Module, num_classes: int) -> TeacherAttention:
    """A frozen `TeacherAttention` for ``teacher`` from a `fit_teacher_attention` state dict."""
    module = TeacherAttention(teacher.stage_channels, num_classes)
    module.load_state_dict(state)
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
