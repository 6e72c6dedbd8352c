"""One source of defaults: training schedules, presets and the budget grammar.

Presets
-------
``quick`` is the default without a GPU: every stage finishes on a 2-core CPU in minutes because it
trains on a stratified subset of the training split for few epochs. ``standard`` is the default
with a GPU: the full training split and real schedules. Every field can be overridden from the CLI
(``dataclasses.replace``), and the resolved values are written verbatim into each run directory.

Budget grammar
--------------
``2M`` means at most 2,000,000 MACs; ``params:200k`` at most 200,000 parameters;
``macs:2M,params:200k`` both. Suffixes k, M, G (powers of 1000, case-insensitive); a plain
integer is allowed. Anything else is a `UserError` listing the accepted forms.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from nas_kd.errors import UserError

__all__ = [
    "Schedule",
    "Preset",
    "PRESETS",
    "get_preset",
    "default_preset_name",
    "Budget",
    "parse_budget",
    "parse_count",
    "format_count",
]


@dataclass(frozen=True)
class Schedule:
    """How long and how hard to train one network.

    ``lr`` is the SGD learning rate for ``batch_size`` (scaled linearly if the batch changes);
    the schedule is a linear warm-up over ``warmup_epochs`` then cosine decay to zero.
    ``train_subset`` limits training to that many examples (stratified, seeded); None = all.
    ``crop`` switches the random crop off (flips, where the dataset allows them, stay).
    """

    epochs: int
    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    train_subset: int | None = None
    crop: bool = True  # random crop with padding; short CPU schedules converge faster without it

    def __post_init__(self):
        if self.epochs < 1:
            raise UserError(f"epochs must be at least 1, got {self.epochs}: pass --epochs 1 or more")
        if self.batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if self.train_subset is not None and self.train_subset < 1:
            raise UserError(f"train subset must be positive, got {self.train_subset}")

    def replace(self, **changes) -> Schedule:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Preset:
    """Schedules for the three kinds of training nas-kd does."""

    name: str
    teacher: Schedule  # the fixed teacher, trained once and cached
    brief: Schedule  # each search candidate: short, only needs to rank candidates well
    full: Schedule  # the final retrain of the winner and of the baselines
    trials: int = 20  # default number of search trials

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    # A 2-core CPU: subsets of the training split, a handful of epochs. Figures are lower than a
    # GPU's, but every command completes in minutes and ranks candidates sensibly.
    "quick": Preset(
        name="quick",
        # Measured on the 2-core CPU (resnet20 teacher, Fashion-MNIST): batch 64, lr 0.05 and no
        # random crop reach 84.6% test in 101 s; batch 128, lr 0.1 with crops reached 80.1%.
        teacher=Schedule(epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.3, train_subset=24000, crop=False),
        # Two brief epochs: one (31 steps) left several candidates at chance, and pruning needs
        # an epoch before the last.
        brief=Schedule(epochs=2, batch_size=128, lr=0.1, warmup_epochs=0.2, train_subset=4000, crop=False),
        full=Schedule(epochs=3, batch_size=128, lr=0.1, warmup_epochs=0.5, train_subset=8000, crop=False),
        trials=8,
    ),
    # One H100: the full training split.
    "standard": Preset(
        name="standard",
        teacher=Schedule(epochs=20, batch_size=256, lr=0.2, warmup_epochs=1.0),
        brief=Schedule(epochs=3, batch_size=256, lr=0.2, warmup_epochs=0.5),
        full=Schedule(epochs=20, batch_size=256, lr=0.2, warmup_epochs=1.0),
        trials=100,
    ),
}


def default_preset_name() -> str:
    """``standard`` when a CUDA device is visible, else ``quick``."""
    import torch

    return "standard" if torch.cuda.is_available() else "quick"


def get_preset(name: str | None) -> Preset:
    name = name or default_preset_name()
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------- budget

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_COUNT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)\s*$")
BUDGET_FORMS = "'2M' (MACs), 'params:200k', or 'macs:2M,params:200k' (suffixes k, M, G)"


def parse_count(text: str) -> int:
    """'2M' -> 2_000_000, '200k' -> 200_000, '1.5G' -> 1_500_000_000. Raises ValueError."""
    m = _COUNT_RE.match(text)
    if not m:
        raise ValueError(text)
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value != int(value):
        raise ValueError(text)
    return int(value)


def format_count(n: float) -> str:
    """2_000_000 -> '2.00M'; 1234 -> '1.23k'; 12 -> '12'."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{int(n)}"


@dataclass(frozen=True)
class Budget:
    """Upper limits on a student's cost; None means unconstrained."""

    macs: int | None = None
    params: int | None = None
    text: str = field(default="", compare=False)

    def fits(self, macs: int, params: int) -> bool:
        return (self.macs is None or macs <= self.macs) and (self.params is None or params <= self.params)

    def violations(self, macs: int, params: int) -> list[float]:
        """Optuna constraint values: <= 0 means satisfied, one entry per limit (relative excess)."""
        out = []
        if self.macs is not None:
            out.append(macs / self.macs - 1.0)
        if self.params is not None:
            out.append(params / self.params - 1.0)
        return out

    def slug(self) -> str:
        parts = []
        if self.macs is not None:
            parts.append(f"macs{format_count(self.macs)}")
        if self.params is not None:
            parts.append(f"params{format_count(self.params)}")
        return "-".join(parts).replace(".00", "")

    def describe(self) -> str:
        parts = []
        if self.macs is not None:
            parts.append(f"MACs <= {format_count(self.macs)}")
        if self.params is not None:
            parts.append(f"params <= {format_count(self.params)}")
        return " and ".join(parts)


def parse_budget(text: str) -> Budget:
    """Parse the budget grammar (see module docstring); `UserError` on anything else."""

    def bad(why: str) -> UserError:
        return UserError(f"invalid budget '{text}': {why}; use {BUDGET_FORMS}")

    if text is None or not str(text).strip():
        raise bad("it is empty")
    limits: dict[str, int] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise bad("a limit between commas is empty")
        if ":" in part:
            key, _, value = part.partition(":")
            key = key.strip().lower()
            if key not in ("macs", "params"):
                raise bad(f"unknown limit '{key}'")
        else:
            key, value = "macs", part
        if key in limits:
            raise bad(f"'{key}' is given twice")
        try:
            count = parse_count(value)
        except ValueError:
            raise bad(f"'{value.strip()}' is not a number with an optional k, M or G suffix") from None
        if count <= 0:
            raise bad("limits must be positive")
        limits[key] = count
    return Budget(macs=limits.get("macs"), params=limits.get("params"), text=str(text).strip())
