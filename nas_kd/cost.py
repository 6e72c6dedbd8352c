"""What a student costs: multiply-accumulates (MACs) per image and trainable parameters.

Definition (see docs/COST.md): MACs are the multiply-adds of every convolution (including
depthwise and squeeze-excitation 1x1 convs) and of the classifier's linear layer, for ONE image
of the given (C, H, W) shape. Batch norm (folded into the preceding conv at export), activations,
residual additions, the squeeze-excitation gate multiply and global average pooling are not
counted: each is one cheap operation per element, and `NOT_COUNTED` lists exactly these
operators. Biases are not counted as MACs (fvcore's and thop's convention). Parameters are
``sum(p.numel() for p in model.parameters())``: BN's running statistics are buffers, not counted.

`measure` is the reference: it builds the network and counts with fvcore's `FlopCountAnalysis`
(whose "flops" are multiply-adds for conv and linear). It refuses to silently count an operator
as zero: any traced operator that is neither counted nor in `NOT_COUNTED` raises. `thop_macs`
is an independent cross-check (module hooks instead of tracing). `analytic_cost` computes the
same numbers from the config alone, without building anything (~0.1 ms), so a search can reject
an over-budget candidate before paying for fvcore; tests assert it equals `measure` exactly.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from nas_kd.config import format_count
from nas_kd.device import torch_threads
from nas_kd.models.blocks import out_size, se_channels
from nas_kd.models.student import StudentConfig, build_student

__all__ = [
    "Cost",
    "COUNTED",
    "NOT_COUNTED",
    "UncountedOperatorError",
    "count_macs",
    "measure",
    "thop_macs",
    "analytic_cost",
    "analytic_macs",
]

# Operators whose multiply-adds are counted, as fvcore names them after tracing.
COUNTED = ("aten::_convolution", "aten::linear")

# Operators deliberately counted as zero, with why. Anything else traced in a student is an error.
NOT_COUNTED: dict[str, str] = {
    "aten::batch_norm": "folded into the preceding convolution's weights and bias at export",
    "aten::relu_": "activation: one comparison per element",
    "aten::hardtanh": "ReLU6 activation: two comparisons per element",
    "aten::sigmoid": "squeeze-excitation gate on a 1x1 map: one op per channel",
    "aten::mul": "squeeze-excitation scaling: one multiply per element",
    "aten::add": "residual addition: one add per element",
    "aten::adaptive_avg_pool2d": "global average pooling: one add per element",
    "aten::flatten": "reshape only, no arithmetic",
}


class UncountedOperatorError(RuntimeError):
    """A traced operator that is neither counted nor deliberately skipped: a cost-model bug."""


@dataclass(frozen=True)
class Cost:
    """MACs per image and trainable parameters of one student."""

    macs: int
    params: int

    def describe(self) -> str:
        return f"{format_count(self.macs)} MACs, {format_count(self.params)} params"


def count_macs(model: nn.Module, inputs: torch.Tensor) -> tuple[int, Counter]:
    """fvcore's multiply-add count of ``model(inputs)`` and the operators it did not count.

    Raises `UncountedOperatorError` if any uncounted operator is outside `NOT_COUNTED`.
    """
    fvcore_logger = logging.getLogger("fvcore")
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        # fvcore warns at import (torch.jit.script is deprecated) and while tracing: noise only.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis
            from fvcore.nn.jit_handles import conv_flop_jit, linear_flop_jit

            analysis = FlopCountAnalysis(model, inputs)
            analysis.clear_op_handles().set_op_handle(
                **{COUNTED[0]: conv_flop_jit, COUNTED[1]: linear_flop_jit}
            )
            # fvcore silently skips a built-in list of operators (relu, max, sum, reshape, ...):
            # empty it so every operator is either counted or reported, and NOT_COUNTED decides.
            analysis._ignored_ops = set()
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            macs = int(analysis.total())
            skipped = Counter(analysis.unsupported_ops())
    finally:
        fvcore_logger.setLevel(level)
    unknown = sorted(set(skipped) - set(NOT_COUNTED))
    if unknown:
        raise UncountedOperatorError(
            f"fvcore cannot count {', '.join(unknown)}: add a handle or, if it is truly free, "
            "add it to nas_kd.cost.NOT_COUNTED and docs/COST.md"
        )
    return macs, skipped


def _shape(input_shape) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


def measure(cfg: StudentConfig, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
    """Reference cost of ``cfg`` on one (C, H, W) image, counted by fvcore; memoised."""
    return _measure(cfg, _shape(input_shape), int(num_classes))


@functools.lru_cache(maxsize=4096)
def _measure(cfg: StudentConfig, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
    # A batch-1 trace is too small to split across threads (see torch_threads).
    with torch_threads(1), torch.no_grad():
        model = build_student(cfg, input_shape[0], num_classes).eval()
        macs, _ = count_macs(model, torch.zeros(1, *input_shape))
    return Cost(macs=macs, params=sum(p.numel() for p in model.parameters()))


def thop_macs(cfg: StudentConfig, input_shape: tuple[int, int, int], num_classes: int) -> int | None:
    """thop's count under the same definition: its BN and pooling rules are zeroed (see module doc).
    None where thop cannot be imported: it is a cross-check, and the report says it is missing."""
    c, h, w = _shape(input_shape)
    model = build_student(cfg, c, num_classes).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # thop warns at import (distutils) and about unknown modules
        try:
            # thop imports distutils, gone from Python 3.12's standard library; setuptools, once
            # imported, provides it.
            import setuptools  # noqa: F401
        except ImportError:
            pass
        try:
            from thop import profile
            from thop.vision.basic_hooks import zero_ops
        except ImportError:
            return None

        not_counted = {nn.BatchNorm2d: zero_ops, nn.AdaptiveAvgPool2d: zero_ops}
        macs, _ = profile(model, inputs=(torch.zeros(1, c, h, w),), custom_ops=not_counted, verbose=False)
    return int(macs)


def _conv(cin: int, cout: int, kernel: int, h: int, w: int, groups: int = 1, bias: bool = False) -> Cost:
    """A conv producing an h x w map, plus its BN's 2*cout parameters when it has no bias."""
    weights = cout * (cin // groups) * kernel * kernel
    return Cost(macs=weights * h * w, params=weights + (cout if bias else 2 * cout))


def _se(channels: int) -> Cost:
    squeeze = se_channels(channels)
    down, up = _conv(channels, squeeze, 1, 1, 1, bias=True), _conv(squeeze, channels, 1, 1, 1, bias=True)
    return Cost(down.macs + up.macs, down.params + up.params)


def _sum(costs) -> Cost:
    costs = list(costs)
    return Cost(sum(c.macs for c in costs), sum(c.params for c in costs))


def _block(
    block: str, cin: int, cout: int, stride: int, kernel: int, expand: int, se: bool, h: int, w: int
) -> Cost:
    """Cost of one block (mirrors nas_kd.models.blocks) whose input map is h x w."""
    ho, wo = out_size(h, stride), out_size(w, stride)
    parts = []
    if block == "inverted_residual":
        hidden = cin * expand
        if expand != 1:
            parts.append(_conv(cin, hidden, 1, h, w))
        parts.append(_conv(hidden, hidden, kernel, ho, wo, groups=hidden))
        if se:
            parts.append(_se(hidden))
        parts.append(_conv(hidden, cout, 1, ho, wo))
    else:
        parts += [_conv(cin, cout, kernel, ho, wo), _conv(cout, cout, kernel, ho, wo)]
        if se:
            parts.append(_se(cout))
        if stride != 1 or cin != cout:
            parts.append(_conv(cin, cout, 1, ho, wo))
    return _sum(parts)


def analytic_cost(cfg: StudentConfig, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
    """`measure`'s numbers from the config alone (no network is built); exact, not an estimate."""
    c, h, w = _shape(input_shape)
    h, w = out_size(h, cfg.stem_stride), out_size(w, cfg.stem_stride)
    parts = [_conv(c, cfg.stem_width, cfg.stem_kernel, h, w)]
    width = cfg.stem_width
    for s in cfg.stages:
        for j in range(s.depth):
            stride = s.stride if j == 0 else 1
            parts.append(_block(cfg.block, width, s.width, stride, s.kernel, s.expand, s.se, h, w))
            h, w, width = out_size(h, stride), out_size(w, stride), s.width
    parts.append(Cost(macs=width * num_classes, params=width * num_classes + num_classes))
    return _sum(parts)


def analytic_macs(cfg: StudentConfig, input_shape: tuple[int, int, int], num_classes: int) -> int:
    return analytic_cost(cfg, input_shape, num_classes).macs
