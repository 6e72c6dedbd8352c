"""Named distillation modes: a frozen set of loss weights plus a few knobs, and their overrides.

A zero weight means the term is neither computed nor built (no adapter, attention module or
discriminator exists for it). Why each preset has the weights it has is in docs/DISTILLER.md;
the papers publish few of them, so most are our choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from nas_kd.errors import UserError

__all__ = ["LossWeights", "Mode", "MODES", "get_mode", "parse_loss_weights", "WEIGHT_KEYS", "KNOB_KEYS"]


@dataclass(frozen=True)
class LossWeights:
    ce: float = 1.0  # cross-entropy with the labels
    kd: float = 0.0  # Hinton KD at the mode's temperature (T²-scaled)
    l1: float = 0.0  # L1 between logits (Xu et al.)
    l2: float = 0.0  # squared L2 between logits (KSANC's backbone loss)
    feat: float = 0.0  # MSE between adapted student maps and teacher maps (pixel level)
    desc: float = 0.0  # squared L2 between attention-squeezed descriptors (KSANC's L_is)
    adv_logit: float = 0.0  # student's GAN + auxiliary-class loss against the logit discriminator
    adv_feat: float = 0.0  # student's GAN loss against the feature-map discriminator (spatial level)
    recon: float = 0.0  # the teacher's frozen decoder must rebuild the image from the adapted deepest map (Zhang et al.)

    def active(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v != 0}


WEIGHT_KEYS = tuple(f.name for f in dataclasses.fields(LossWeights))
# Knobs that `parse_loss_weights` also accepts, with what each must satisfy.
KNOB_KEYS = ("temperature", "disc_lr", "logit_disc_lr", "disc_penalty", "feat_r1", "adv_warmup", "map_samples")


@dataclass(frozen=True)
class Mode:
    """A distillation recipe. ``stages`` picks which paired stages the feature and descriptor
    losses supervise ("all" or "last"); the feature discriminator always sees the deepest pair."""

    name: str
    weights: LossWeights
    temperature: float = 4.0  # common practice; 1, 2 and 8 measured no better for kd (docs/DISTILLER.md, "kd's temperature")
    stages: str = "all"
    disc_lr: float = 1e-3  # Adam, feature-map discriminator
    # Adam, logit discriminator. 1e-3 (and Xu et al.'s SGD at 1e-3) left it near chance after the
    # 62 steps of the quick brief schedule; see docs/DISTILLER.md.
    logit_disc_lr: float = 1e-2
    disc_penalty: float = 0.0  # coefficient of the L1 + L2 weight penalty on the logit discriminator
    feat_r1: float = 0.0  # R1 penalty (gamma) on the feature discriminator's gradient at teacher maps
    adv_warmup: float = 0.0  # fraction of training steps before the student's adversarial terms start
    # Images per batch whose stage maps the map terms (feat, desc, adv_feat, recon) read: the
    # batch's first ones, a random subset since batches are shuffled; None: all of them, as in the
    # papers. 32 makes a `full` step on the 0.48M student ~1.6x a `ce` step instead of 2.6x on the
    # CPU, but scored -0.22 [-1.37, +0.93] points against the whole batch over 3 paired seeds
    # (below on 2 of 3): not shown harmless, so the default is the whole batch (docs/DISTILLER.md,
    # "Map terms on part of each batch").
    map_samples: int | None = None
    summary: str = ""

    @property
    def needs_reconstruction(self) -> bool:
        """The ``recon`` term runs the teacher's decoder, which only a reconstruction-trained teacher has."""
        return bool(self.weights.recon)

    @property
    def uses_teacher(self) -> bool:
        return any(k != "ce" for k in self.weights.active())

    @property
    def uses_maps(self) -> bool:
        w = self.weights
        return bool(w.feat or w.desc or w.adv_feat or w.recon)

    @property
    def uses_teacher_maps(self) -> bool:
        """Whether the losses read teacher stage maps (``desc`` reads only squeezed descriptors)."""
        w = self.weights
        return bool(w.feat or w.adv_feat or w.recon)

    @property
    def uses_discriminator(self) -> bool:
        return bool(self.weights.adv_logit or self.weights.adv_feat)

    def override(self, changes: dict[str, float]) -> Mode:
        """A copy with some weights and knobs replaced (keys as `parse_loss_weights` returns)."""
        weights = dataclasses.replace(self.weights, **{k: v for k, v in changes.items() if k in WEIGHT_KEYS})
        knobs = {k: int(v) if k == "map_samples" else v for k, v in changes.items() if k in KNOB_KEYS}
        return dataclasses.replace(self, weights=weights, **knobs)

    def describe(self) -> str:
        """Name, active weights and T: what a reader needs (and what kept-run keys hold)."""
        return f"{self.name} ({self._terms()}; T={self.temperature:g})"

    def signature(self) -> str:
        """`describe` plus every other knob: two modes with one signature train alike. What a
        study's workers must share (`nas_kd.plan.SearchPlan.settings`)."""
        knobs = ", ".join(f"{k}={'all' if v is None else format(v, 'g')}" for k, v in self._knobs().items() if k != "temperature")
        return f"{self.name} ({self._terms()}; T={self.temperature:g}, stages={self.stages}, {knobs})"

    def _terms(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.weights.active().items())

    def _knobs(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in KNOB_KEYS}

    def changes_from(self, base: Mode) -> dict[str, float]:
        """The `parse_loss_weights` overrides that turn ``base`` into this mode (weights, then
        knobs, in field order); `ValueError` where no override can (``stages``, or a
        ``map_samples`` of all images over a base that samples)."""
        if self.stages != base.stages or (self.map_samples is None and base.map_samples is not None):
            raise ValueError(f"{self.signature()} is not {base.name} with overrides")
        mine, theirs = {**dataclasses.asdict(self.weights), **self._knobs()}, {**dataclasses.asdict(base.weights), **base._knobs()}
        return {k: v for k, v in mine.items() if v != theirs[k]}

    def to_dict(self) -> dict:
        """Every field but the summary (JSON-ready); `from_dict` inverts it."""
        return {"name": self.name, "weights": dataclasses.asdict(self.weights), "stages": self.stages, **self._knobs()}

    @classmethod
    def from_dict(cls, d: dict) -> Mode:
        """A stored mode exactly as it was (not today's defaults). Fields missing from ``d`` take
        today's defaults (stored before they existed); an unknown field is refused: a newer
        version stored it, and dropping it would train something else."""
        known = {f.name for f in dataclasses.fields(cls)} - {"summary"}
        unknown = sorted(set(d) - known) + sorted(set(d.get("weights", {})) - set(WEIGHT_KEYS))
        if unknown:
            raise UserError(f"stored mode '{d.get('name')}' has knobs this nas-kd does not know ({', '.join(unknown)}): use the nas-kd version that stored it")
        base = MODES.get(d["name"])
        fields = {k: v for k, v in d.items() if k != "weights"}
        return cls(**fields, weights=LossWeights(**d["weights"]), summary=base.summary if base else "")


# R1 on the feature discriminator in every mode that has one. Without it the discriminator
# separated teacher from student maps outright (accuracy 0.99-1.00 from epoch 2) and its steep
# boundary cost `full` 1.9 validation points (88.48% vs 90.42% without adv_feat; 0.48M student,
# 3 full-data epochs, seed 0); gamma 1 recovered 90.35%, gamma 10 90.57% (docs/DISTILLER.md).
FEAT_R1 = 10.0

MODES: dict[str, Mode] = {
    "ce": Mode("ce", LossWeights(ce=1.0), summary="labels only, no teacher: the baseline every mode must beat"),
    # 0.5/0.5: common practice; 0.25/0.75, 0.1/0.9 and 0/1 measured no better (docs/DISTILLER.md, "kd's ce/kd split").
    "kd": Mode("kd", LossWeights(ce=0.5, kd=0.5), summary="Hinton et al.: soft targets at temperature T"),
    "ktan": Mode(
        "ktan",
        LossWeights(ce=0.5, kd=0.5, feat=0.1, adv_feat=0.1),
        stages="last",
        feat_r1=FEAT_R1,
        adv_warmup=0.1,
        summary="KTAN: KD + T2S feature MSE + a discriminator on the deepest feature maps",
    ),
    "ksanc": Mode(
        "ksanc",
        LossWeights(ce=0.5, l2=0.1, desc=0.1, adv_logit=0.1),
        disc_penalty=1e-5,
        adv_warmup=0.1,
        summary="KSANC: logit L2 + attention-squeezed descriptors at every stage + logit discriminator",
    ),
    "xu": Mode(
        "xu",
        LossWeights(ce=1.0, l1=1.0, adv_logit=1.0),
        summary="Xu et al.: CE + L1 on logits + a logit discriminator with an auxiliary classifier, all weights 1",
    ),
    "zhang": Mode(
        "zhang",
        LossWeights(ce=0.5, kd=0.5, feat=0.1, adv_feat=0.1, recon=0.1),
        stages="all",
        feat_r1=FEAT_R1,
        adv_warmup=0.1,
        summary="Zhang et al.: a reconstruction-trained teacher; pixel-level feature MSE + spatial-level adversarial loss + its decoder reading the student",
    ),
    "full": Mode(
        "full",
        LossWeights(ce=0.5, kd=0.5, feat=0.1, desc=0.1, adv_logit=0.1, adv_feat=0.1),
        disc_penalty=1e-5,
        feat_r1=FEAT_R1,
        adv_warmup=0.1,
        summary="everything: KD + feature MSE + squeezed descriptors at every paired stage + both discriminators",
    ),
}


def get_mode(name: str | Mode) -> Mode:
    """A mode by name, or by ``name+key=value+...`` (that mode with `parse_loss_weights`
    overrides, e.g. ``full+adv_feat=0``: how benches name the variants they compare)."""
    if isinstance(name, Mode):
        return name
    if "+" in name:
        base, *changes = name.split("+")
        return get_mode(base).override(parse_loss_weights(",".join(changes)))
    if name not in MODES:
        raise UserError(f"unknown distillation mode '{name}': choose one of {', '.join(MODES)}")
    return MODES[name]


def parse_loss_weights(text: str | None) -> dict[str, float]:
    """'kd=0.5,feat=1' -> {'kd': 0.5, 'feat': 1.0}; `UserError` on unknown keys or bad values.

    Weights must be finite and >= 0; ``temperature``, ``disc_lr`` and ``logit_disc_lr`` > 0; ``disc_penalty`` and ``feat_r1`` >= 0;
    ``adv_warmup`` in [0, 1); ``map_samples`` a whole number >= 1.
    """
    valid = f"valid keys: {', '.join(WEIGHT_KEYS + KNOB_KEYS)}"
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"invalid loss weights '{text}': '{part.strip()}' is not key=value; {valid}")
        if key not in WEIGHT_KEYS + KNOB_KEYS:
            raise UserError(f"invalid loss weights '{text}': unknown key '{key}'; {valid}")
        if key in out:
            raise UserError(f"invalid loss weights '{text}': '{key}' is given twice")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"invalid loss weights '{text}': '{value.strip()}' for '{key}' is not a number") from None
        positive = key in ("temperature", "disc_lr", "logit_disc_lr")
        count = key == "map_samples"
        if not math.isfinite(number) or number < 0 or (positive and number == 0) or (key == "adv_warmup" and number >= 1) or (count and (number < 1 or number != int(number))):
            need = "in [0, 1)" if key == "adv_warmup" else "a whole number >= 1" if count else "positive" if positive else "finite and >= 0"
            raise UserError(f"invalid loss weights '{text}': '{key}' must be {need}, got {value.strip()}")
        out[key] = number
    return out
