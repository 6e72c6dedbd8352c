"""How large a teacher's stage maps are, so that the map terms do not depend on it.

A teacher's stage maps have whatever scale its training left them at: the shipped resnet20's are
about 1.2-1.6 (root mean square), a randomly initialised one's 0.1-0.25, a network without
batch normalisation's anything. The student's adapted maps leave a BN layer at about 1. Compared
as they were, the same teacher with every map multiplied by 0.1 (its predictions unchanged) gave
mode full 49% validation accuracy where the original gave 77% (quick brief, 0.48M student;
docs/DISTILLER.md, "Teachers of any scale"): the feature MSE, the attention squeeze fitted on small
maps, and the decoder all read the student's unit-scale maps at the wrong scale.

So every map term works in one unit, the teacher map's root mean square per stage
(`teacher_map_scales`, measured once on the first `PROBE_IMAGES` un-augmented training images):
the adapters scale their output by it, so the adapted maps the decoder, the attention and the
feature discriminator read are in the teacher's units, and the feature MSE is divided by its
square, so its size (and what the mode's weight means) does not change with the teacher's scale.
The attention squeeze measures the same for itself when it is fitted (`TeacherAttention.stage_scale`).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from nas_kd.device import autocast, one_thread

__all__ = ["PROBE_IMAGES", "teacher_map_scales"]

PROBE_IMAGES = 512  # one teacher pass (~0.5 s of a resnet20 on this project's CPU)

# teacher -> {loader -> scales}: a search's trials share one loader, so it measures once.
_measured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def teacher_map_scales(teacher: nn.Module, loader) -> tuple[float, ...]:
    """Each teacher stage map's root mean square over ``loader``'s (a `DeviceLoader`) first
    `PROBE_IMAGES` training images, normalised and un-augmented: one pass in eval mode,
    remembered per teacher and loader."""
    known = _measured.setdefault(teacher, weakref.WeakKeyDictionary())
    if loader not in known:
        probe = loader.view(torch.arange(min(PROBE_IMAGES, loader.num_examples), device=loader.device), flip=False)
        was_training = teacher.training
        teacher.eval()
        with autocast(loader.device):
            maps, _ = teacher.forward_stages(probe)
        teacher.train(was_training)
        # At least 1e-6: a dead stage must not make its terms divide by zero. One thread: a
        # reduction split over threads rounds differently with their number (the shipped
        # teacher's first stage: 1.2237525 on one thread, 1.2237524 on two), and the scales are a
        # property of the teacher and data, which a cache filled with every core shares with runs
        # of one thread each (`one_thread`).
        with one_thread():
            known[loader] = tuple(max(1e-6, m.float().pow(2).mean().sqrt().item()) for m in maps)
    return known[loader]
