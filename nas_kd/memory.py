"""What a student needs on a microcontroller: peak activation memory (RAM) and weight bytes (flash).

Peak activation memory (the definition is docs/COST.md, "Peak activation memory")
-----------------------------------------------------------------------------------
The forward pass of ONE image runs its operators in the order `forward` calls them. Every
operator writes a new buffer, except the element-wise one-input operators (batch norm, ReLU,
ReLU6, sigmoid, identity, flatten), which work in place on their input when nothing later reads
that input (runtimes fold BN into the conv and fuse the activation). A buffer is alive from the
operator that writes it to the last operator that reads it; the network input is alive until
the stem has read it, and a residual block's input stays alive until its addition (or its
shortcut projection) has read it. The memory at an operator is the sum of the buffers alive
while it runs (its inputs, its output and everything still to be read later); the peak is the
largest such sum over the pass. Bytes = elements x the precision's bytes per activation.

`peak_elements` computes it from the config alone (closed forms per block, no network, ~0.1
ms); `traced_peak_elements` measures it on the real network, by tracing it with torch.fx and
running the liveness rule above over the traced graph, operator by operator. Tests assert the
two are equal, and equal to hand-computed values for every block type.

Weight bytes
------------
What an exported student stores: batch norm is folded into its convolution (weights rescaled,
its shift becomes one bias per output channel), so the stored numbers are every conv and linear
weight plus one bias per conv output channel and per class. Weights take the precision's weight
bytes, biases its bias bytes (int32 under int8). `onnx_size_bytes` counts the same from an
exported ONNX graph's initializers (where the exporter has folded BN) as the measured check.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas_kd.config import Precision
from nas_kd.models.blocks import out_size, se_channels
from nas_kd.models.student import StudentConfig

__all__ = [
    "Weights",
    "peak_elements",
    "peak_memory_bytes",
    "weights_of",
    "size_bytes",
    "traced_peak_elements",
    "onnx_size_bytes",
    "IN_PLACE",
]


# ------------------------------------------------------------------------------------ analytic


def _se_peak(d: int, channels: int) -> int:
    """Peak inside squeeze-excitation on a map of ``d`` elements with ``channels`` channels: the
    map stays alive for the final multiply while pool -> reduce -> expand run on 1x1 vectors."""
    s = se_channels(channels)
    return max(
        d + channels,  # pool: map in, pooled vector out
        d + channels + s,  # reduce: pooled in, squeezed out (ReLU in place)
        d + s + channels,  # expand: squeezed in, gate out (sigmoid in place)
        d + channels + d,  # multiply: map and gate in, a new map out
    )


def _inverted_residual_peak(cin: int, cout: int, stride: int, expand: int, se: bool, h: int, w: int) -> int:
    ho, wo = out_size(h, stride), out_size(w, stride)
    hidden = cin * expand
    t, e, d, o = cin * h * w, hidden * h * w, hidden * ho * wo, cout * ho * wo
    residual = stride == 1 and cin == cout
    keep = t if residual else 0  # the block input, alive until the addition reads it
    peaks = []
    if expand != 1:
        peaks += [t + e, keep + e + d]  # expand conv; depthwise (input freed unless residual)
    else:
        peaks += [t + d]  # depthwise reads the block input itself
    if se:
        peaks.append(keep + _se_peak(d, hidden))
    peaks.append(keep + d + o)  # projection
    if residual:
        peaks.append(t + o + o)  # addition: input and projection in, a new map out
    return max(peaks)


def _basic_peak(cin: int, cout: int, stride: int, se: bool, h: int, w: int) -> int:
    ho, wo = out_size(h, stride), out_size(w, stride)
    t, o = cin * h * w, cout * ho * wo
    peaks = [t + o, t + o + o]  # conv1 (input kept for the shortcut); conv2 (conv1's map in)
    if se:
        peaks.append(t + _se_peak(o, cout))
    if stride != 1 or cin != cout:
        peaks += [t + o + o, o + o + o]  # shortcut projection after the body; addition
    else:
        peaks.append(t + o + o)  # addition of the input itself
    return max(peaks)


def peak_elements(cfg: StudentConfig, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Largest number of activation elements alive at once in one image's forward pass (see the
    module docstring); computed from the config alone, exact."""
    c, h, w = (int(v) for v in input_shape)
    ho, wo = out_size(h, cfg.stem_stride), out_size(w, cfg.stem_stride)
    peaks = [c * h * w + cfg.stem_width * ho * wo]  # stem: the image in, its map out
    h, w, width = ho, wo, cfg.stem_width
    for s in cfg.stages:
        for j in range(s.depth):
            stride = s.stride if j == 0 else 1
            if cfg.block == "inverted_residual":
                peaks.append(_inverted_residual_peak(width, s.width, stride, s.expand, s.se, h, w))
            else:
                peaks.append(_basic_peak(width, s.width, stride, s.se, h, w))
            h, w, width = out_size(h, stride), out_size(w, stride), s.width
    peaks += [width * h * w + width, width + num_classes]  # global pool; classifier
    return max(peaks)


def peak_memory_bytes(cfg: StudentConfig, input_shape, num_classes: int, precision: Precision) -> int:
    return peak_elements(cfg, input_shape, num_classes) * precision.activation


@dataclass(frozen=True)
class Weights:
    """Numbers an exported student stores (BN folded): weights and biases."""

    weights: int
    biases: int

    def bytes(self, precision: Precision) -> int:
        return self.weights * precision.weight + self.biases * precision.bias


def weights_of(cfg: StudentConfig, input_shape, num_classes: int) -> Weights:
    """Stored weights and biases of ``cfg`` once BN is folded (mirrors nas_kd.models.blocks)."""
    c = int(input_shape[0])
    weights = biases = 0

    def conv(cin: int, cout: int, kernel: int, groups: int = 1) -> None:
        nonlocal weights, biases
        weights += cout * (cin // groups) * kernel * kernel
        biases += cout  # BN's folded shift, or the conv's own bias (squeeze-excitation)

    def se(channels: int) -> None:
        conv(channels, se_channels(channels), 1)
        conv(se_channels(channels), channels, 1)

    conv(c, cfg.stem_width, cfg.stem_kernel)
    width = cfg.stem_width
    for s in cfg.stages:
        for j in range(s.depth):
            stride = s.stride if j == 0 else 1
            if cfg.block == "inverted_residual":
                hidden = width * s.expand
                if s.expand != 1:
                    conv(width, hidden, 1)
                conv(hidden, hidden, s.kernel, groups=hidden)
                if s.se:
                    se(hidden)
                conv(hidden, s.width, 1)
            else:
                conv(width, s.width, s.kernel)
                conv(s.width, s.width, s.kernel)
                if s.se:
                    se(s.width)
                if stride != 1 or width != s.width:
                    conv(width, s.width, 1)
            width = s.width
    return Weights(weights=weights + width * num_classes, biases=biases + num_classes)


def size_bytes(cfg: StudentConfig, input_shape, num_classes: int, precision: Precision) -> int:
    return weights_of(cfg, input_shape, num_classes).bytes(precision)


# ------------------------------------------------------------------------------------ measured

# One-input element-wise operators that overwrite their input when nothing later reads it.
IN_PLACE = ("BatchNorm2d", "ReLU", "ReLU6", "Sigmoid", "Identity", "Dropout", "flatten")


def _op_name(node, modules) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))


def traced_peak_elements(model, input_shape: tuple[int, int, int]) -> tuple[int, str]:
    """Peak activation elements of ``model`` on one image, measured on its torch.fx graph: the
    shapes come from running it (ShapeProp), the lifetimes from which node reads which buffer.
    Returns (peak, the operator where it is reached)."""
    import torch
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    graph_module = symbolic_trace(model.eval())
    with torch.no_grad():
        ShapeProp(graph_module).propagate(torch.zeros(1, *input_shape))
    modules = dict(graph_module.named_modules())
    nodes = [n for n in graph_module.graph.nodes if n.op != "get_attr"]
    order = {n: i for i, n in enumerate(nodes)}
    buffer: dict = {}  # node -> the node whose buffer holds its value
    size: dict = {}
    for n in nodes:
        if n.op == "output":
            continue
        inputs = [a for a in n.all_input_nodes if a in buffer]
        elementwise = _op_name(n, modules) in IN_PLACE and len(inputs) == 1
        # In place only when this node is the last reader of its input's buffer.
        if elementwise and all(order[u] <= order[n] for u in _readers(buffer[inputs[0]], buffer)):
            buffer[n] = buffer[inputs[0]]
        else:
            buffer[n] = n
            size[n] = n.meta["tensor_meta"].shape.numel()
    last_read = {b: order[b] for b in size}
    for n in nodes:
        for a in n.all_input_nodes:
            if a in buffer:
                last_read[buffer[a]] = max(last_read[buffer[a]], order[n])
    best, where = 0, ""
    for n in nodes:
        if n.op in ("output", "placeholder"):
            continue
        alive = sum(size[b] for b in size if order[b] <= order[n] <= last_read[b])
        if alive > best:
            best, where = alive, n.name
    return best, where


def _readers(held, buffer: dict) -> list:
    """Every node that reads the buffer ``held``: the users of every value stored in it so far."""
    return [user for node, b in buffer.items() if b is held for user in node.users]


def onnx_size_bytes(path, precision: Precision) -> int:
    """Weight bytes of an exported ONNX student: each Conv and Gemm's weight initializer at the
    precision's weight bytes and its bias at the bias bytes. Constants of other operators (the
    in-graph normalisation) are not the student's weights and are left out. (A deployment stores
    each conv's bias, even where the exporter shared equal ones.)"""
    import math

    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {t.name: math.prod(t.dims) for t in graph.initializer}
    # The exporter stores equal tensors once (fresh BN folds to equal biases) and hands the
    # copies out through Identity nodes: each copy is still a stored bias of its own conv.
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    total = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        for position, name in enumerate(node.input[1:3], 1):
            if name in shapes:
                total += shapes[name] * (precision.weight if position == 1 else precision.bias)
    return total
