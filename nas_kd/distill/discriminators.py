"""The two discriminators, what they see, and when their verdict may push the student.

Feature-map discriminator (architecture is our choice; neither paper publishes one)
----------------------------------------------------------------------------------
A PatchGAN-style stack: 3×3 conv stride 2 -> LeakyReLU(0.2) -> 3×3 conv -> LeakyReLU(0.2) ->
1×1 conv to one score *per position*. A score per position judges local spatial structure,
which is the point of KTAN's adversarial term (a plain L2 loss ignores spatial correlation).
No normalisation layers, so the student's step can show it student maps alone. Width 32.

Both sides reach it through `feature_view`: ReLU, then division by the map's root mean square
per image. Teacher maps are taken after a ReLU (never negative) while adapted student maps are
BN outputs (about half negative): compared raw, the discriminator won within ~20 steps on the
sign alone, and its gradient taught the student "be non-negative" rather than spatial structure.
In one space, with the scale divided out, only the pattern of activity can tell them apart.

Logit discriminator (Xu et al.)
-------------------------------
``depth`` (3) residual FC layers of width C with BN, ReLU and dropout 0.3, then a linear layer to
1 + C outputs: one real/fake logit (for BCE; Xu et al. use a 2-way softmax, equivalent) and C
class scores for the auxiliary classifier. Xu et al.'s input BN is replaced (**ours**) by a
standardisation with the *teacher's* logit statistics (`TeacherStandardise`): with batch
statistics, small student logits shrank the normaliser and amplified the gradient the student
received, and the student could move the yardstick it was judged by.

Gates
-----
A discriminator no better than chance gives the student noise, not information. `AccuracyGate`
keeps a running accuracy of each verdict (real/fake, and the auxiliary class prediction on
teacher logits) and scales the matching student term by a factor that is 0 until the accuracy
exceeds chance by ``GATE_MARGIN`` and ramps to 1 over the next ``GATE_RAMP`` (our choice).
"""

from __future__ import annotations

import torch
from torch import nn

from nas_kd.models.batch_counters import without_batch_counters

__all__ = ["FeatureDiscriminator", "LogitDiscriminator", "TeacherStandardise", "AccuracyGate", "feature_view", "verdict_accuracy", "GATE_MARGIN", "GATE_RAMP"]

GATE_MARGIN = 0.05  # accuracy above chance before a term may push the student at all
GATE_RAMP = 0.10  # further accuracy over which the push grows to full weight
GATE_MOMENTUM = 0.9  # running accuracy: about the last ten discriminator steps


def feature_view(maps: torch.Tensor, eps: float = 1e-5, memo: dict | None = None, unit: float = 1.0) -> torch.Tensor:
    """What the feature discriminator sees of an (N, C, H, W) map, the same function for teacher
    and student: each channel shifted by its median over the batch and positions, ReLU, divided by
    the channel's root mean square. Every channel is then active at exactly half of its positions
    with unit scale on both sides, so only *where* and *together with which channels* it is
    active can tell teacher from student. The statistics are constants for the gradient.

    ``unit``: the scale of the maps (the teacher map's root mean square, nas_kd.distill.map_scale):
    ``eps`` is relative to it, so the view of a map and of the same map times c are the same.

    ``memo``: a dict kept with the map (`Adapted.view_memo`): the statistics are worked out at the
    first call and reused by the next on the same values (the student's map is viewed by the
    discriminators' update, detached, and again by the student's adversarial term): the same
    numbers without a second median (a sort on a GPU) and mean square, ~6 launches a step."""
    x = maps.float()
    if memo is not None and "stats" in memo:
        median, rms = memo["stats"]
        return torch.relu(x - median.view(1, -1, 1, 1)) / rms
    median = x.detach().transpose(0, 1).flatten(1).median(dim=1).values
    x = torch.relu(x - median.view(1, -1, 1, 1))
    rms = x.detach().pow(2).mean((0, 2, 3), keepdim=True).add(eps * unit * unit).sqrt()
    if memo is not None:
        memo["stats"] = (median, rms)
    return x / rms


class FeatureDiscriminator(nn.Module):
    """(N, C, H, W) map -> (N, ceil(H/2), ceil(W/2)) real/fake logits."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


class TeacherStandardise(nn.Module):
    """Per-class standardisation with the mean and variance of every teacher logit it has
    observed (exact running moments: the teacher is frozen, so its statistics do not move)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(num_classes, dtype=torch.float64))
        # The normaliser the moments give, worked out once per `observe` instead of at every
        # judgement (twice a step: ~14 ops each, on a launch-bound GPU step). Derived, so not
        # saved; refreshed in place (a CUDA graph captures these tensors' addresses).
        self.register_buffer("shift", torch.zeros(num_classes), persistent=False)
        self.register_buffer("scale", torch.ones(num_classes), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @torch.no_grad()
    def observe(self, teacher_logits: torch.Tensor) -> None:
        t = teacher_logits.detach().double()
        self.count += len(t)
        self.total += t.sum(0)
        self.total_sq += t.pow(2).sum(0)
        self._refresh()

    @torch.no_grad()
    def _refresh(self) -> None:
        count = self.count.clamp(min=1)
        mean = self.total / count
        var = (self.total_sq / count - mean.pow(2)).clamp(min=0)
        # A floor of 1 (logit units): the normaliser may shrink inputs but never amplify them,
        # whatever the teacher (an untrained one has near-constant logits). Nothing observed
        # yet: the identity (mean 0 then, and the variance floored to 1).
        var = torch.where(self.count > 0, var.clamp(min=1.0), torch.ones_like(var))
        self.shift.copy_(mean)
        self.scale.copy_(torch.rsqrt(var.float()))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.float() - self.shift) * self.scale


def _refresh_after_load(module: TeacherStandardise, _incompatible_keys) -> None:
    module._refresh()


class _ResidualFC(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LogitDiscriminator(nn.Module):
    """(N, C) logits -> ((N,) real/fake logit, (N, C) class scores)."""

    def __init__(self, num_classes: int, depth: int = 3, dropout: float = 0.3):
        super().__init__()
        self.standardise = TeacherStandardise(num_classes)
        self.blocks = nn.Sequential(*(_ResidualFC(num_classes, dropout) for _ in range(depth)))
        self.out = nn.Linear(num_classes, 1 + num_classes)
        without_batch_counters(self)  # trained every step: no BN counter launches (nas_kd.models.batch_counters)

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.out(self.blocks(self.standardise(logits)))
        return out[:, 0], out[:, 1:]


def verdict_accuracy(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Fraction of correct real/fake calls (score > 0 means "teacher"), real and fake weighted
    equally; scores of any shape."""
    return 0.5 * ((real_scores > 0).float().mean() + (fake_scores < 0).float().mean())


class AccuracyGate(nn.Module):
    """Running accuracy of one verdict and the factor by which it may push the student."""

    def __init__(self, chance: float):
        super().__init__()
        self.chance = chance
        self.register_buffer("accuracy", torch.tensor(float(chance)))

    @torch.no_grad()
    def observe(self, batch_accuracy: torch.Tensor) -> None:
        self.accuracy.mul_(GATE_MOMENTUM).add_((1 - GATE_MOMENTUM) * batch_accuracy.float())

    def factor(self) -> torch.Tensor:
        """0 up to chance + margin, 1 from chance + margin + ramp, linear between (no host sync)."""
        return ((self.accuracy - self.chance - GATE_MARGIN) / GATE_RAMP).clamp(0.0, 1.0)
