"""Block-wise search spaces, read from YAML: every stage is its own decision.

A space file (see ``search_spaces/*.yaml``) declares the block type, the stem and a list of
stages. Each stage fixes its ``stride`` (1 or 2) and offers choice lists for ``depth``,
``width``, ``kernel``, ``expand`` (inverted residual only) and ``se``; a scalar is a one-choice
list. The stem fixes ``kernel`` and ``stride`` and offers ``width`` choices. Optuna parameters
are named ``stem.width``, ``stage1.depth``, ``stage1.width``, ... (stages numbered from 1), and
only decisions with more than one choice are suggested.

Uniform members (the hand-designed baselines, scaled the way MobileNetV2 and ResNet usually are:
one width multiplier, one depth and one expansion ratio for the whole network): member (w, d, e)
takes the w-th smallest width, the d-th smallest depth and the e-th smallest expansion of the stem
and of every stage (clamped to the last choice where a list is shorter), the smallest kernel and
no squeeze-excitation. Every (w, d, e) combination is a member; distinct members are numbered by
ascending parameter count (independent of the input size), so ``uniform(0)`` is the smallest.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas_kd.config import Budget
from nas_kd.cost import measure
from nas_kd.errors import UserError
from nas_kd.models.blocks import BLOCK_TYPES
from nas_kd.models.student import StageConfig, StudentConfig

__all__ = ["StageChoices", "SearchSpace"]

_UNIFORM_CACHE: dict = {}  # SearchSpace (frozen, hashable) -> its sorted uniform members

_TOP = "(top level)"
_TOP_KEYS = {"name", "description", "block", "stem", "stages"}
_STEM_KEYS = {"width", "kernel", "stride"}
_CHOICE_KEYS = ("depth", "width", "kernel", "expand", "se")
_STAGE_KEYS = {"stride", *_CHOICE_KEYS}
# Choice lists a stage may leave out, and what leaving them out means.
_DEFAULTS = {"kernel": (3,), "expand": (1,), "se": (False,)}


@dataclass(frozen=True)
class StageChoices:
    """What one stage may be: a fixed stride and a tuple of choices per decision."""

    stride: int
    depth: tuple[int, ...]
    width: tuple[int, ...]
    kernel: tuple[int, ...] = (3,)
    expand: tuple[int, ...] = (1,)
    se: tuple[bool, ...] = (False,)


class _Reader:
    """Validates one parsed YAML document; every error names the file, the key and the problem."""

    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, problem: str) -> UserError:
        return UserError(f"search space {self.source}: {key}: {problem}")

    def mapping(self, key: str, value: Any, allowed: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, got {_kind(value)}")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            inner = unknown[0] if key == _TOP else f"{key}.{unknown[0]}"
            raise self.error(inner, f"unknown key: use {', '.join(sorted(allowed))}")
        return value

    def integer(self, key: str, value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"{what} must be an integer, got {value!r}")
        if value <= 0:
            raise self.error(key, f"{what} must be positive, got {value}")
        return value

    def stride(self, key: str, value: Any) -> int:
        value = self.integer(key, value, "stride")
        if value not in (1, 2):
            raise self.error(key, f"stride must be 1 or 2, got {value}")
        return value

    def kernel(self, key: str, value: Any) -> int:
        value = self.integer(key, value, "kernel")
        if value % 2 == 0:
            raise self.error(key, f"kernel must be odd, got {value}")
        return value

    def choices(self, key: str, value: Any, name: str) -> tuple:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.error(key, "choice list is empty")
        if name == "se":
            bad = [v for v in items if not isinstance(v, bool)]
            if bad:
                raise self.error(key, f"se choices must be true or false, got {bad[0]!r}")
        elif name == "kernel":
            items = [self.kernel(key, v) for v in items]
        else:
            items = [self.integer(key, v, name) for v in items]
        if len(set(items)) != len(items):
            raise self.error(key, f"choices repeat: {items}")
        return tuple(sorted(items))

    def space(self, data: Any) -> SearchSpace:
        data = self.mapping(_TOP, data, _TOP_KEYS)
        for key in ("block", "stem", "stages"):
            if key not in data:
                raise self.error(key, "missing")
        block = data["block"]
        if block not in BLOCK_TYPES:
            raise self.error("block", f"unknown block type {block!r}: use {', '.join(sorted(BLOCK_TYPES))}")
        stem = self.mapping("stem", data["stem"], _STEM_KEYS)
        if "width" not in stem:
            raise self.error("stem.width", "missing")
        stages_data = data["stages"]
        if not isinstance(stages_data, list) or not stages_data:
            raise self.error("stages", f"must be a non-empty list of stages, got {_kind(stages_data)}")
        stages = []
        for i, raw in enumerate(stages_data, 1):
            where = f"stage{i}"
            raw = self.mapping(where, raw, _STAGE_KEYS)
            for key in ("stride", "depth", "width"):
                if key not in raw:
                    raise self.error(f"{where}.{key}", "missing")
            if block == "basic" and "expand" in raw:
                raise self.error(f"{where}.expand", "does not apply to block type 'basic'")
            picks = {
                name: self.choices(f"{where}.{name}", raw[name], name) if name in raw else _DEFAULTS[name]
                for name in _CHOICE_KEYS
            }
            stages.append(StageChoices(stride=self.stride(f"{where}.stride", raw["stride"]), **picks))
        return SearchSpace(
            name=str(data.get("name", Path(self.source).stem)),
            block=block,
            stem_width=self.choices("stem.width", stem["width"], "width"),
            stem_kernel=self.kernel("stem.kernel", stem.get("kernel", 3)),
            stem_stride=self.stride("stem.stride", stem.get("stride", 1)),
            stages=tuple(stages),
            source=self.source,
        )


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


BUILTIN_SPACES = Path(__file__).resolve().parent / "search_spaces"


def builtin_spaces() -> list[str]:
    return sorted(p.stem for p in BUILTIN_SPACES.glob("*.yaml"))


def resolve_space_file(path: str | Path) -> Path:
    """An existing file as given; else a built-in space named bare (``mbv2``) or as in a checkout
    (``search_spaces/mbv2.yaml``), so the defaults work from any folder and from a pip install.
    Any other missing path stays as given (its read fails with the path the user typed)."""
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("search_spaces")):
        return path
    builtin = BUILTIN_SPACES / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    return builtin if builtin.is_file() else path


@dataclass(frozen=True)
class SearchSpace:
    """A block-wise space of `StudentConfig`s (see module docstring for the file format)."""

    name: str
    block: str
    stem_width: tuple[int, ...]
    stem_kernel: int
    stem_stride: int
    stages: tuple[StageChoices, ...]
    source: str = "<memory>"

    @classmethod
    def read(cls, path: str | Path) -> tuple[SearchSpace, str]:
        """Read and validate a YAML space; returns (space, the file's text). Any problem is a
        one-line `UserError`."""
        path = resolve_space_file(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise UserError(f"cannot read search space {path}: {e.strerror or e} (built in: {', '.join(builtin_spaces())}, or a YAML file's path)") from None
        return cls.from_yaml(text, source=str(path)), text

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        return cls.read(path)[0]

    @classmethod
    def from_yaml(cls, text: str, source: str = "<memory>") -> SearchSpace:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "(file)"
            raise UserError(f"search space {source}: {where}: not valid YAML ({getattr(e, 'problem', e)})") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> SearchSpace:
        return _Reader(source).space(data)

    def decisions(self) -> list[tuple[str, tuple]]:
        """Every decision as (Optuna parameter name, choices), including one-choice ones."""
        out: list[tuple[str, tuple]] = [("stem.width", self.stem_width)]
        for i, stage in enumerate(self.stages, 1):
            out += [(f"stage{i}.{name}", getattr(stage, name)) for name in _CHOICE_KEYS]
        return out

    def size(self) -> int:
        """Number of distinct students: the product of every decision's choice count."""
        return math.prod(len(choices) for _, choices in self.decisions())

    def _make(self, pick: Callable[[str, tuple], Any]) -> StudentConfig:
        values = {name: pick(name, choices) for name, choices in self.decisions()}
        stages = tuple(
            StageConfig(stride=stage.stride, **{k: values[f"stage{i}.{k}"] for k in _CHOICE_KEYS})
            for i, stage in enumerate(self.stages, 1)
        )
        return StudentConfig(
            block=self.block,
            stem_width=values["stem.width"],
            stem_kernel=self.stem_kernel,
            stem_stride=self.stem_stride,
            stages=stages,
        )

    def sample(self, trial) -> StudentConfig:
        """Define-by-run: one ``trial.suggest_categorical`` per decision with several choices."""
        return self._make(lambda name, c: trial.suggest_categorical(name, list(c)) if len(c) > 1 else c[0])

    def config_from_params(self, params: dict) -> StudentConfig:
        """Rebuild a sampled config from ``trial.params`` (one-choice decisions may be absent)."""
        known = dict(self.decisions())
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise UserError(f"parameter '{unknown[0]}' is not a decision of search space {self.name}")

        def pick(name: str, choices: tuple) -> Any:
            if name not in params:
                if len(choices) > 1:
                    raise UserError(f"parameter '{name}' is missing for search space {self.name}")
                return choices[0]
            value = params[name]
            if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
                raise UserError(f"parameter '{name}'={value!r} is not one of {list(choices)} in {self.name}")
            return value

        return self._make(pick)

    def config_at(self, index: dict[str, int]) -> StudentConfig:
        """The member with choice ``index[name]`` of each decision (index 0 where absent); no
        validation, for hot loops such as `nas_kd.proposals`."""
        return self._make(lambda name, choices: choices[index.get(name, 0)])

    def params_of(self, cfg: StudentConfig) -> dict:
        """The Optuna parameters that make ``cfg`` (the inverse of `config_from_params`)."""
        values = {"stem.width": cfg.stem_width}
        for i, stage in enumerate(cfg.stages, 1):
            values.update({f"stage{i}.{k}": getattr(stage, k) for k in _CHOICE_KEYS})
        params = {name: values[name] for name, choices in self.decisions() if len(choices) > 1}
        if self.config_from_params(params) != cfg:
            raise UserError(f"{cfg.describe()} is not a member of search space {self.name}")
        return params

    def random_config(self, rng: random.Random) -> StudentConfig:
        """A uniformly random member (each decision drawn independently)."""
        return self._make(lambda _name, choices: rng.choice(choices))

    def smallest(self) -> StudentConfig:
        """The cheapest member: every choice at its minimum (cost grows with each choice)."""
        return self._make(lambda _name, choices: choices[0])

    def largest(self) -> StudentConfig:
        """The most expensive member: every choice at its maximum."""
        return self._make(lambda _name, choices: choices[-1])

    def _uniform_grid(self) -> list[StudentConfig]:
        def longest(field: str) -> int:
            return max(len(c) for name, c in self.decisions() if name.endswith("." + field))

        members: dict[StudentConfig, None] = {}
        for w in range(longest("width")):
            for d in range(longest("depth")):
                for e in range(longest("expand")):
                    index = {"width": w, "depth": d, "expand": e}

                    def pick(name: str, choices: tuple, index=index) -> Any:
                        field = name.rsplit(".", 1)[1]
                        if field in index:
                            return choices[min(index[field], len(choices) - 1)]
                        return choices[0]  # smallest kernel, no SE

                    members.setdefault(self._make(pick))
        # Parameter count orders members the same way on every input size (MACs would not).
        return sorted(members, key=lambda cfg: (measure(cfg, (1, 32, 32), 10).params, cfg.to_json()))

    def num_uniform(self) -> int:
        return len(self.uniform_members())

    def uniform(self, scale: int) -> StudentConfig:
        """Uniform member ``scale`` (0 = fewest parameters); the rule is in the module docstring."""
        members = self.uniform_members()
        if not 0 <= scale < len(members):
            raise UserError(f"uniform scale must be 0..{len(members) - 1} for {self.name}, got {scale}")
        return members[scale]

    def uniform_members(self) -> list[StudentConfig]:
        if self not in _UNIFORM_CACHE:
            _UNIFORM_CACHE[self] = self._uniform_grid()
        return list(_UNIFORM_CACHE[self])

    def baseline(
        self, budget: Budget, input_shape: tuple[int, int, int], num_classes: int = 10, trials=(), table=None, exclude: Collection[str] = ()
    ) -> StudentConfig:
        """The largest uniform member whose measured cost fits ``budget`` (peak memory and
        weight bytes exact, latency predicted by the machine's table: `nas_kd.meter`). A study's
        ``trials`` put their correction and slowest speed on the latency prediction, so a
        baseline chosen after a search is judged like the search's candidates. Members whose
        config JSON is in ``exclude`` (measured over a latency limit: `nas_kd.finalize`) are
        passed over."""
        from nas_kd.meter import BudgetMeter

        meter = BudgetMeter(budget, input_shape, num_classes, self, table=table)
        meter.correct_from(trials)
        costs = [(measure(cfg, input_shape, num_classes), cfg) for cfg in self.uniform_members()]
        fitting = [  # the most MACs that fit: the baseline a user would pick for this budget
            (cost.macs, cost.params, i)
            for i, (cost, cfg) in enumerate(costs)
            if cfg.to_json() not in exclude and budget.fits(**{**meter.values(cfg), "macs": cost.macs, "params": cost.params})
        ]
        if not fitting:
            cost, cfg = min(costs, key=lambda pair: (pair[0].macs, pair[0].params))
            raise UserError(
                f"budget {budget.describe()} is below the smallest uniform member of {self.name} "
                f"({cfg.describe()}: {cost.describe()}): raise the budget"
            )
        return costs[max(fitting)[2]][1]
