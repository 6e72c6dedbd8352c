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
``memory:64k`` at most 64,000 bytes of activations alive at once and ``size:100k`` at most
100,000 bytes of weights, both at the budget's precision (``--precision``, default int8, see
`PRECISIONS` and docs/COST.md); ``latency:2ms`` at most 2 ms per image at batch 1 on this
machine (onnxruntime, `nas_kd.latency`). Limits combine with commas: ``macs:2M,params:200k``,
``memory:32k,size:64k``. Suffixes k, M, G (powers of 1000, also for bytes, case-insensitive); a
plain integer is allowed. Anything else is a `UserError` listing the accepted forms.
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
    "parse_ms",
    "format_count",
    "format_quantity",
    "SCHEDULE_FIELDS",
    "parse_schedule_overrides",
    "override_schedule",
    "schedule_overrides",
    "QUANTITIES",
    "Precision",
    "PRECISIONS",
    "DEFAULT_PRECISION",
    "get_precision",
]


@dataclass(frozen=True)
class Schedule:
    """How long and how hard to train one network.

    ``lr`` is the SGD learning rate at ``batch_size``; nothing rescales it when the batch changes
    (change both). The schedule is a linear warm-up over ``warmup_epochs`` then cosine decay to zero.
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


# What `--brief` and `--full` may change in a preset's schedule, each with the kind of value it takes.
SCHEDULE_FIELDS: dict[str, str] = {
    "epochs": "a whole number >= 1",
    "batch_size": "a whole number >= 1",
    "lr": "a number > 0",
    "momentum": "a number in [0, 1)",
    "weight_decay": "a number >= 0",
    "warmup_epochs": "a number >= 0",
    "label_smoothing": "a number in [0, 1)",
    "train_subset": "a whole number of examples, 0 for all",
    "crop": "0 or 1",
}


def parse_schedule_overrides(text: str | None, flag: str) -> dict:
    """``epochs=2,batch_size=512,crop=0`` -> the `Schedule` fields it sets ({} for None or "").
    Nothing is rescaled: a larger batch_size keeps the preset's lr unless lr is given too."""
    if text is None or not str(text).strip():
        return {}
    example = f"e.g. {flag} epochs=2,batch_size=512,lr=0.4,crop=0"
    changes: dict = {}
    for part in str(text).split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if key not in SCHEDULE_FIELDS or not sep:
            raise UserError(f"invalid {flag} part '{part.strip()}': known fields are {', '.join(SCHEDULE_FIELDS)}; {example}")
        changes[key] = _schedule_value(key, value, flag)
    return changes


def _schedule_value(key: str, value: str, flag: str):
    bad = UserError(f"invalid {flag} {key}={value}: {key} takes {SCHEDULE_FIELDS[key]}")
    if key in ("epochs", "batch_size", "train_subset"):
        if not value.isdigit():
            raise bad
        number = int(value)
        if key == "train_subset":
            return number or None  # 0: the whole training split
        if number < 1:
            raise bad
        return number
    if key == "crop":
        if value not in ("0", "1"):
            raise bad
        return value == "1"
    try:
        number = float(value)
    except ValueError:
        raise bad from None
    ok = {  # NaN fails every one of these comparisons
        "lr": number > 0,
        "momentum": 0 <= number < 1,
        "weight_decay": number >= 0,
        "warmup_epochs": number >= 0,
        "label_smoothing": 0 <= number < 1,
    }[key]
    if not ok:
        raise bad
    return number


def override_schedule(schedule: Schedule, text: str | None, flag: str) -> Schedule:
    """``schedule`` with exactly the fields ``text`` sets (`parse_schedule_overrides`): not
    `Schedule.replace`, which skips None, and ``train_subset=0`` is None, the whole split."""
    return dataclasses.replace(schedule, **parse_schedule_overrides(text, flag))


def schedule_overrides(schedule: Schedule, base: Schedule) -> str:
    """The fields where ``schedule`` differs from ``base``, as `parse_schedule_overrides` reads them
    ("" when none do)."""

    def text(key, v):
        if key == "crop":
            return str(int(v))
        if key == "train_subset":
            return str(v or 0)
        return repr(v) if isinstance(v, float) else str(v)

    return ",".join(f"{k}={text(k, getattr(schedule, k))}" for k in SCHEDULE_FIELDS if getattr(schedule, k) != getattr(base, k))


@dataclass(frozen=True)
class Preset:
    """Schedules for the three kinds of training nas-kd does."""

    name: str
    teacher: Schedule  # the fixed teacher, trained once and cached
    brief: Schedule  # each search candidate: short, only needs to rank candidates well
    full: Schedule  # the final retrain of the winner and of the baselines
    trials: int = 20  # default number of search trials
    mode: str = "kd"  # default distiller mode of a search (`--mode` overrides it)
    prune: bool = True  # stop a brief run whose best so far is below the finished runs' median after an epoch but its last (`--prune/--no-prune` overrides it)
    prune_from_epoch: int = 1  # the first epoch after which the pruner may stop a brief run (Optuna's n_warmup_steps; `--prune-from-epoch` overrides it)
    rescreen: int = 3  # re-screen the best N brief candidates and the baseline on the full schedule (`--rescreen` overrides it)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    # A 2-core CPU: subsets of the training split, a handful of epochs. Figures are lower than a
    # GPU's, but every command completes in minutes and ranks candidates sensibly.
    "quick": Preset(
        name="quick",
        # Measured on the 2-core CPU (resnet20 teacher, Fashion-MNIST): batch 64, lr 0.05 and no
        # random crop reach 84.6% test in 101 s (85.4% in 135 s on 2026-11-23: docs/BENCHMARKS.md,
        # teachers-quick-cpu); batch 128, lr 0.1 with crops reached 80.1%.
        teacher=Schedule(epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.3, train_subset=24000, crop=False),
        # Two brief epochs: one (31 steps) left several candidates at chance, and pruning needs
        # an epoch before the last.
        brief=Schedule(epochs=2, batch_size=128, lr=0.1, warmup_epochs=0.2, train_subset=4000, crop=False),
        # The final retrain (and the re-screen of the top candidates) sees 48,000 images: a 2M
        # student in kd reaches ~89% (3 epochs of 8,000 gave ~85%) at ~1,400 images/s on two
        # cores, so the rescreen and the 9 runs of the verdict fit `make search`'s 15 minutes.
        full=Schedule(epochs=2, batch_size=128, lr=0.1, warmup_epochs=0.3, train_subset=24000, crop=False),
        trials=8,
        # kd, not full: on the CPU full was no better than kd over 3 paired seeds (+0.06 points,
        # 95% CI -0.24 to +0.36; docs/BENCHMARKS.md, distill-cpu) at 1.7-2.7x the step time.
        mode="kd",
        # No pruning: `--trials` counts pruned candidates, and in the 8-trial searches of
        # docs/results/search_startup.json the median rule stopped 22 of 80 (22 of the 30 after the
        # 5th) on a 31-step score whose rank agreement with the brief run's end is 0.36 (58
        # trials), to save under 2% of a search's time (re-screen and retrain are the rest).
        prune=False,
        # Re-screen the brief top 3 and the baseline: inside a budget band one 2-epoch full run
        # ranks students worse (Spearman 0.23 against their 3-seed mean, 25 students at 2M) than
        # the 62-step brief run (0.41), yet it guards the pick. Over 10 paired 8-trial searches
        # each, the brief run's best alone minus the re-screened pick was -0.02 [-0.26, +0.22]
        # test points at 2M but -0.50 [-1.22, +0.21] at 500k (one search -2.4), where only the
        # re-screened searches beat the uniform baseline (+0.38 [+0.09, +0.66] vs -0.13
        # [-0.91, +0.65]; over the 4 searches sharing no retrain seed +0.74 [+0.22, +1.27] vs
        # +0.33 [-0.34, +1.00]; over 10 re-screened ones +0.32 [-0.13, +0.77], docs/BENCHMARKS.md
        # search-vs-ce); cost ~110 s of a 2M search: docs/SEARCH.md, "Ranking inside the budget band".
        rescreen=3,
    ),
    # One H100: the full training split.
    "standard": Preset(
        name="standard",
        teacher=Schedule(epochs=20, batch_size=256, lr=0.2, warmup_epochs=1.0),
        # No random crops in the brief run: over 3 paired seeds of the ~0.5M mbv2 student in mode
        # full it ended 2.76 validation points higher without them (95% CI +0.47 to +5.04; 90.43%
        # vs 87.67%), the 2M one 1.85 higher [1.45, 2.25] (92.18% vs 90.33%; 1.64 [1.43, 1.84]
        # with its crop-free runs trained again in session 37), as the quick
        # preset's short runs did, and a crop-free run reads the teacher's outputs from a cache
        # filled once per search (shared by its --jobs processes), where crops keep the teacher
        # live in every step of every trial (on the CPU: half the training time). Batch 512 and
        # 1024, the lr scaled by the square root, lost 2.09 [0.11, 4.07] and 6.73 [0.64, 12.82]
        # points in 3 epochs: 256 stays (docs/BENCHMARKS.md, standard-brief-cpu).
        brief=Schedule(epochs=3, batch_size=256, lr=0.2, warmup_epochs=0.5, crop=False),
        # No random crops in the full schedule either (the re-screen and the final retrain, winner
        # and baselines alike): over 3 paired seeds of 20-epoch runs of the ~0.5M mbv2 student,
        # mode full ended 1.34 validation points higher without them [0.68, 2.00] (92.39% vs
        # 91.06%), and plain ce 1.04 higher [-0.06, +2.15] (91.78% vs 90.74%; higher on every
        # seed), so dropping them handicaps neither the distilled winner nor the ce baseline. The
        # runs read the teacher from the cache the search's brief trials filled (on the CPU about
        # half the training time; docs/BENCHMARKS.md, standard-full-cpu and standard-full-cpu-ce).
        # The 2M student gained 0.76 [0.47, 1.04] (93.72% vs 92.96%, higher on every seed;
        # standard-full-cpu-large). Batch 512 at lr 0.4 would halve a GPU retrain's steps: the
        # 0.48M student held its accuracy there (-0.06 [-0.47, +0.35] over 5 paired seeds), the 2M
        # one did not (-0.47 [-1.11, +0.16], two seeds a point down; at lr 0.2828 -0.26 [-0.48,
        # -0.04]): 256 stays (standard-full-cpu-batch, standard-full-cpu-large-batch).
        full=Schedule(epochs=20, batch_size=256, lr=0.2, warmup_epochs=1.0, crop=False),
        trials=100,
        # kd, not full, as in the quick preset: over 5 paired seeds on the CPU (validation), kd
        # minus full was -0.02 [-0.25, +0.22] points on the 2M student's 20-epoch retrain, -0.24
        # [-0.48, +0.01] on its brief run, +0.02 [-0.17, +0.21] (10 seeds) and -0.71 [-2.10, +0.67] on
        # the 0.48M student's, so full led detectably on none, while it took 2-3x kd's CPU time per run
        # and 2.3-2.7x its GPU step (H200). The teacher still pays at 2M, and kd carries it: on the
        # retrain kd minus ce was +0.44 [+0.18, +0.70] (docs/BENCHMARKS.md, "Which mode should the
        # standard preset default to?"; standard-full-cpu-large-modes, gpu-steptime).
        mode="kd",
        # Pruning stays on, on a tie: replayed on 40 random 2M candidates' unpruned brief runs
        # (kd, CPU, validation), the median rule stopped 28 (21 after epoch 1, whose Spearman with
        # the end is 0.15; 7 after epoch 2, 0.49), 3 of the final top 5 and the best (by 0.07
        # points), for 59% of the compute; at equal compute it found 92.389% against 92.382%
        # without pruning. The rule set before the analysis turned it off only if that were not
        # above (docs/BENCHMARKS.md, prune-signal-standard).
        prune=True,
        # From epoch 2: a second record (search seed 1, 30 fresh candidates) was run under a rule
        # written before it (commit e3288b2): start at epoch 2 if there the equal-compute best is
        # at least the shipped rule's and it stops no more of the top 5. It held (92.27% vs
        # 92.26%; 3 of the top 5 stopped vs 4), as on the first record (92.41% vs 92.389%, 1 vs
        # 3). Epoch 1's Spearman with the brief run's end was 0.15 and 0.34 on the two records. No
        # rule beat no pruning on the second (92.30%): whether to prune at all is for the GPU's
        # 100-trial searches (docs/BENCHMARKS.md, prune-signal-standard-s1).
        prune_from_epoch=2,
    ),
}


def default_preset_name() -> str:
    """``standard`` when a CUDA device is visible, else ``quick``."""
    from nas_kd.device import cuda_present  # without initialising CUDA (a search may start MPS first)

    return "standard" if cuda_present() else "quick"


def get_preset(name: str | None) -> Preset:
    name = name or default_preset_name()
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------- budget

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_COUNT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)\s*$")
_MS_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*ms\s*$", re.IGNORECASE)
BUDGET_FORMS = (
    "'2M' (MACs), 'params:200k', 'memory:64k' (peak activation bytes), 'size:100k' (weight bytes), "
    "'latency:2ms' (ms per image), or several joined by commas, e.g. 'macs:2M,memory:64k,latency:1.5ms' "
    "(suffixes k, M, G)"
)
# What a budget can limit, in the order limits are listed, reported and turned into constraints.
QUANTITIES = ("macs", "params", "memory", "size", "latency")
_LABELS = {"macs": "MACs", "params": "params", "memory": "peak memory", "size": "size", "latency": "latency"}


@dataclass(frozen=True)
class Precision:
    """Bytes per stored number when a student is deployed at this precision. int8 runtimes keep
    biases as int32 (they are added to int32 accumulators), so a bias costs 4 bytes there too."""

    name: str
    activation: int
    weight: int
    bias: int


PRECISIONS: dict[str, Precision] = {
    "int8": Precision("int8", activation=1, weight=1, bias=4),
    "fp32": Precision("fp32", activation=4, weight=4, bias=4),
}
DEFAULT_PRECISION = "int8"


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise UserError(f"unknown precision '{name}': choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def parse_count(text: str) -> int:
    """'2M' -> 2_000_000, '200k' -> 200_000, '1.5G' -> 1_500_000_000. Raises ValueError."""
    m = _COUNT_RE.match(text)
    if not m:
        raise ValueError(text)
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value != int(value):
        raise ValueError(text)
    return int(value)


def parse_ms(text: str) -> float:
    """'2ms' -> 2.0, '1.5 ms' -> 1.5. Raises ValueError."""
    m = _MS_RE.match(text)
    if not m:
        raise ValueError(text)
    return float(m.group(1))


def format_count(n: float) -> str:
    """2_000_000 -> '2.00M'; 1234 -> '1.23k'; 12 -> '12'."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{int(n)}"


def format_quantity(quantity: str, value: float) -> str:
    """A value of one budgeted quantity with its unit: '2.00M', '64.00kB', '1.23 ms'."""
    if quantity == "latency":
        return f"{value:.3g} ms"
    if quantity in ("memory", "size"):
        return f"{format_count(value)}B"
    return format_count(value)


@dataclass(frozen=True)
class Budget:
    """Upper limits on a student's cost; None means unconstrained.

    ``memory`` (peak activation bytes, `nas_kd.memory`) and ``size`` (weight bytes) are counted at
    ``precision``; ``latency`` is milliseconds per image at batch 1 on this machine
    (`nas_kd.latency`). Every check takes the values by quantity name; a limited quantity whose
    value is not given is a programming error (ValueError), never a silent pass.
    """

    macs: int | None = None
    params: int | None = None
    memory: int | None = None
    size: int | None = None
    latency: float | None = None
    precision: str = DEFAULT_PRECISION
    text: str = field(default="", compare=False)

    def limits(self) -> dict[str, float]:
        """{quantity: limit} for every limited quantity, in `QUANTITIES` order."""
        return {q: getattr(self, q) for q in QUANTITIES if getattr(self, q) is not None}

    def ratios(self, macs: float | None = None, params: float | None = None, **values: float | None) -> dict[str, float]:
        """{quantity: value / limit} for every limit; > 1 is over that limit."""
        values.update(macs=macs, params=params)
        unknown = set(values) - set(QUANTITIES)
        if unknown:
            raise ValueError(f"not a budgeted quantity: {', '.join(sorted(unknown))}")
        missing = [q for q in self.limits() if values.get(q) is None]
        if missing:
            raise ValueError(f"the budget limits {', '.join(missing)} but no value was given for it")
        return {q: values[q] / limit for q, limit in self.limits().items()}

    def fits(self, macs: float | None = None, params: float | None = None, **values: float | None) -> bool:
        return all(r <= 1.0 for r in self.ratios(macs, params, **values).values())

    def violations(self, macs: float | None = None, params: float | None = None, **values: float | None) -> list[float]:
        """Optuna constraint values: <= 0 means satisfied, one entry per limit (relative excess)."""
        return [r - 1.0 for r in self.ratios(macs, params, **values).values()]

    @property
    def counted_at_precision(self) -> bool:
        """Whether the precision changes what this budget means (memory or size is limited)."""
        return self.memory is not None or self.size is not None

    def slug(self) -> str:
        parts = []
        for q, limit in self.limits().items():
            parts.append(f"latency{limit:g}ms" if q == "latency" else f"{q}{format_count(limit)}")
        if self.counted_at_precision and self.precision != DEFAULT_PRECISION:
            parts.append(self.precision)
        return "-".join(parts).replace(".00", "")

    def describe(self) -> str:
        parts = [f"{_LABELS[q]} <= {format_quantity(q, limit)}" for q, limit in self.limits().items()]
        text = " and ".join(parts)
        return text + (f" ({self.precision})" if self.counted_at_precision else "")

    def to_dict(self) -> dict:
        """What plans and reports store: the text and precision (enough to parse it back) and
        the resolved limits for readers."""
        return {"text": self.text, "precision": self.precision, **{q: getattr(self, q) for q in QUANTITIES}, "describe": self.describe()}


def parse_budget(text: str, precision: str = DEFAULT_PRECISION) -> Budget:
    """Parse the budget grammar (see module docstring); `UserError` on anything else."""

    def bad(why: str) -> UserError:
        return UserError(f"invalid budget '{text}': {why}; use {BUDGET_FORMS}")

    get_precision(precision)
    if text is None or not str(text).strip():
        raise bad("it is empty")
    limits: dict[str, float] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise bad("a limit between commas is empty")
        if ":" in part:
            key, _, value = part.partition(":")
            key = key.strip().lower()
            if key not in QUANTITIES:
                raise bad(f"unknown limit '{key}'")
        else:
            key, value = "macs", part
        if key in limits:
            raise bad(f"'{key}' is given twice")
        try:
            amount = parse_ms(value) if key == "latency" else parse_count(value)
        except ValueError:
            what = "a number of milliseconds such as 2ms or 1.5ms" if key == "latency" else "a number with an optional k, M or G suffix"
            raise bad(f"'{value.strip()}' is not {what}") from None
        if amount <= 0:
            raise bad("limits must be positive")
        limits[key] = amount
    return Budget(**limits, precision=precision, text=str(text).strip())
