"""The same teacher at another activation scale: what a distiller must not notice.

`rescaled_activations` returns a copy of a `CifarResNet` (ResNet-8/20/56, with or without the
reconstruction decoder) whose every stage map is ``c`` times the original's while its logits and
reconstructions stay the same (up to float rounding). A teacher's map scale is an accident of its
training (the shipped resnet20's maps have a root mean square of 1.2-1.6, an untrained one's 0.1-0.25),
so a distiller should give the student the same signals for both: `tests/test_distill_map_scale.py`
and `bench/teacher_scale.py` check that with this copy.

How: a post-activation ResNet is positively homogeneous between its batch norms. Each BN's affine
(weight, bias) is multiplied by ``c``, so its output is; each BN whose *input* is scaled too (every
one but the stem's, which reads the image) also has its running mean times ``c``, its running
variance and ``eps`` times ``c**2``, so it normalises exactly as before. ReLUs, identity shortcuts
and sums commute with the positive factor. The classifier reads ``c``-times features, so its
weight is divided by ``c``; so is the decoder's first convolution's (it is followed by a BN that
would otherwise see its input scaled).
"""

from __future__ import annotations

import copy

from torch import nn

from nas_kd.models.teacher_nets import CifarResNet

__all__ = ["rescaled_activations"]


def rescaled_activations(teacher: CifarResNet, c: float) -> CifarResNet:
    """A copy of ``teacher`` with every stage map ``c`` (> 0) times as large, the same function."""
    if not isinstance(teacher, CifarResNet):
        raise TypeError(f"only a CifarResNet can be rescaled this way, not {type(teacher).__name__}")
    if not c > 0:
        raise ValueError(f"the scale must be positive, not {c}")
    out = copy.deepcopy(teacher)
    stem_bn = out.stem[0][1]  # reads the image's convolution: its input is not scaled
    for m in [*out.stem.modules(), *out.stages.modules()]:
        if isinstance(m, nn.BatchNorm2d):
            if m is not stem_bn:
                m.running_mean.mul_(c)
                m.running_var.mul_(c * c)
                m.eps *= c * c
            m.weight.data.mul_(c)
            m.bias.data.mul_(c)
    out.head.fc.weight.data.div_(c)
    if getattr(out, "decoder", None) is not None:
        first = next(m for m in out.decoder.modules() if isinstance(m, nn.Conv2d))
        first.weight.data.div_(c)
    return out
