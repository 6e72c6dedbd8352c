"""One concrete student: a frozen, JSON-serialisable description and the network built from it.

A `StudentConfig` is what a search trial proposes, what a run directory records and what
`build_student` turns into a `StagedNet` with the teachers' stage-feature interface. Stage
strides are fixed by the search space; everything else is a per-stage choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from nas_kd.errors import UserError
from nas_kd.models.batch_counters import without_batch_counters
from nas_kd.models.blocks import BLOCK_TYPES, ConvBNAct, activation_for, make_block
from nas_kd.models.staged import ClassifierHead, StagedNet

__all__ = ["StageConfig", "StudentConfig", "Student", "build_student", "check_int"]


def _bad(key: str, problem: str) -> UserError:
    return UserError(f"invalid student config: {key} {problem}")


def check_int(key: str, value: Any, minimum: int = 1, allowed: tuple[int, ...] | None = None) -> int:
    """``value`` as an int >= ``minimum`` (and in ``allowed``), else a `UserError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, f"must be an integer, got {value!r}")
    if allowed is not None and value not in allowed:
        raise _bad(key, f"must be one of {', '.join(map(str, allowed))}, got {value}")
    if value < minimum:
        raise _bad(key, f"must be at least {minimum}, got {value}")
    return value


def check_kernel(key: str, value: Any) -> int:
    """Kernels are odd so that ``kernel // 2`` padding keeps the map centred."""
    value = check_int(key, value)
    if value % 2 == 0:
        raise _bad(key, f"must be odd, got {value}")
    return value


def _check_keys(where: str, data: Any, required: set[str], optional: set[str]) -> None:
    if not isinstance(data, dict):
        raise _bad(where, f"must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise _bad(f"{where}.{unknown[0]}" if where else unknown[0], "is not a known key")
    missing = sorted(required - set(data))
    if missing:
        raise _bad(f"{where}.{missing[0]}" if where else missing[0], "is missing")


@dataclass(frozen=True)
class StageConfig:
    """One stage: ``depth`` blocks of ``width`` output channels; the first block has ``stride``."""

    depth: int
    width: int
    stride: int
    kernel: int = 3
    expand: int = 1  # inverted residual hidden width = input width * expand; always 1 for basic
    se: bool = False

    def validate(self, where: str) -> None:
        check_int(f"{where}.depth", self.depth)
        check_int(f"{where}.width", self.width)
        check_int(f"{where}.stride", self.stride, allowed=(1, 2))
        check_kernel(f"{where}.kernel", self.kernel)
        check_int(f"{where}.expand", self.expand)
        if not isinstance(self.se, bool):
            raise _bad(f"{where}.se", f"must be true or false, got {self.se!r}")

    def describe(self, expand: bool = True) -> str:
        """``d2w24k5e6+se``; ``expand=False`` drops the ``e`` part (basic blocks have none)."""
        text = f"d{self.depth}w{self.width}k{self.kernel}" + (f"e{self.expand}" if expand else "")
        return text + ("+se" if self.se else "")


_STAGE_REQUIRED = {"depth", "width", "stride"}
_STAGE_OPTIONAL = {f.name for f in fields(StageConfig)} - _STAGE_REQUIRED


@dataclass(frozen=True)
class StudentConfig:
    """A whole student: block type, stem and stages (shallow to deep). Hashable and canonical:
    two equal configs build identical architectures."""

    block: str
    stem_width: int
    stages: tuple[StageConfig, ...]
    stem_kernel: int = 3
    stem_stride: int = 1

    def __post_init__(self):
        if self.block not in BLOCK_TYPES:
            raise _bad("block", f"'{self.block}' is unknown: choose one of {', '.join(sorted(BLOCK_TYPES))}")
        check_int("stem_width", self.stem_width)
        check_kernel("stem_kernel", self.stem_kernel)
        check_int("stem_stride", self.stem_stride, allowed=(1, 2))
        if not isinstance(self.stages, tuple) or not self.stages:
            raise _bad("stages", "must be a non-empty tuple of StageConfig")
        for i, stage in enumerate(self.stages, 1):
            if not isinstance(stage, StageConfig):
                raise _bad(f"stage{i}", f"must be a StageConfig, got {type(stage).__name__}")
            stage.validate(f"stage{i}")
            if self.block == "basic" and stage.expand != 1:
                raise _bad(f"stage{i}.expand", f"must be 1 for basic blocks, got {stage.expand}")

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    def describe(self) -> str:
        """Short log form, e.g. ``ir c16 s1:d1w16k3e1 s2:d2w24k5e6+se``. Basic blocks omit ``e1``.
        Strides are left out: they are fixed by the search space, so within one space this string
        is unique."""
        tag = BLOCK_TYPES[self.block]
        parts = [tag, f"c{self.stem_width}"]
        for i, s in enumerate(self.stages, 1):
            parts.append(f"s{i}:{s.describe(expand=self.block != 'basic')}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        return {
            "block": self.block,
            "stem_width": self.stem_width,
            "stem_kernel": self.stem_kernel,
            "stem_stride": self.stem_stride,
            "stages": [{f.name: getattr(s, f.name) for f in fields(StageConfig)} for s in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Any) -> StudentConfig:
        """Inverse of `to_dict`; unknown or missing keys and bad values raise `UserError`."""
        top = {f.name for f in fields(cls)}
        _check_keys("", data, {"block", "stem_width", "stages"}, top - {"block", "stem_width", "stages"})
        if not isinstance(data["stages"], list):
            raise _bad("stages", f"must be a list, got {type(data['stages']).__name__}")
        stages = []
        for i, stage in enumerate(data["stages"], 1):
            _check_keys(f"stage{i}", stage, _STAGE_REQUIRED, _STAGE_OPTIONAL)
            stages.append(StageConfig(**stage))
        return cls(**{**data, "stages": tuple(stages)})

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StudentConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"invalid student config: not valid JSON ({e})") from None
        return cls.from_dict(data)


class Student(StagedNet):
    """stem -> one `nn.Sequential` of blocks per stage -> global pool + linear head."""

    def __init__(self, cfg: StudentConfig, in_channels: int, num_classes: int):
        super().__init__()
        self.config = cfg
        self.num_classes = num_classes
        self.stem = ConvBNAct(
            in_channels, cfg.stem_width, cfg.stem_kernel, cfg.stem_stride, act=activation_for(cfg.block)
        )
        stages = []
        width = cfg.stem_width
        for s in cfg.stages:
            blocks = []
            for j in range(s.depth):
                stride = s.stride if j == 0 else 1
                blocks.append(make_block(cfg.block, width, s.width, stride, s.kernel, s.expand, s.se))
                width = s.width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = cfg.stage_channels
        self.head = ClassifierHead(width, num_classes)
        without_batch_counters(self)  # one launch fewer per BN layer and step (see the module)


def build_student(cfg: StudentConfig, in_channels: int, num_classes: int) -> Student:
    """The network for ``cfg`` on ``in_channels``-channel inputs of any size (>= 1x1)."""
    check_int("in_channels", in_channels)
    check_int("num_classes", num_classes, minimum=2)
    return Student(cfg, in_channels, num_classes)
