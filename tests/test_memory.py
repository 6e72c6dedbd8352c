"""Peak activation memory and weight bytes: hand-computed values for every block type, and equality
with the count measured on the traced network (torch.fx) and on the exported ONNX graph."""

from __future__ import annotations

import random

import pytest
import torch

from nas_kd.config import PRECISIONS
from nas_kd.memory import (
    onnx_size_bytes,
    peak_elements,
    peak_memory_bytes,
    size_bytes,
    traced_peak_elements,
    weights_of,
)
from nas_kd.models.student import StageConfig, StudentConfig, build_student
from nas_kd.space import SearchSpace

INT8, FP32 = PRECISIONS["int8"], PRECISIONS["fp32"]


def one_block(block: str, *, stem: int = 2, width: int = 2, stride: int = 1, expand: int = 1, se: bool = False) -> StudentConfig:
    return StudentConfig(block=block, stem_width=stem, stages=(StageConfig(depth=1, width=width, stride=stride, expand=expand, se=se),))


# Every case is one image of 1x4x4 (16 elements) unless said otherwise; "+" sums the buffers
# alive at the operator named last. SE on c channels squeezes to max(8, c // 4) = 8 here.
HAND = [
    # inverted residual, expand 1, stride 2 (no residual): stem 16 + 8*16 = 144;
    # depthwise 128 in + 8*2*2 = 32 out = 160 (the peak); projection 32 + 4*4 = 48
    ("ir expand 1, stride 2", one_block("inverted_residual", stem=8, width=4, stride=2), (1, 4, 4), 2, 160),
    # inverted residual, expand 3, residual: stem 16 + 32 = 48; expand 32 + 96 = 128;
    # depthwise: the block input 32 (kept for the addition) + 96 + 96 = 224 (the peak);
    # projection 32 + 96 + 32 = 160; addition 32 + 32 + 32 = 96
    ("ir expand 3, residual", one_block("inverted_residual", expand=3), (1, 4, 4), 2, 224),
    # ... with SE on the 6-channel hidden map: multiply = input 32 + map 96 + gate 6 + new map 96 = 230
    ("ir expand 3, residual, SE", one_block("inverted_residual", expand=3, se=True), (1, 4, 4), 2, 230),
    # basic, identity shortcut: conv1 32 + 32; conv2 32 (kept) + 32 + 32 = 96; addition 96
    ("basic identity", one_block("basic"), (1, 4, 4), 2, 96),
    # basic, projection 2 -> 4 channels: conv2 32 + 64 + 64 = 160; shortcut 32 + 64 + 64 = 160;
    # addition 64 + 64 + 64 = 192 (the peak)
    ("basic projection", one_block("basic", width=4), (1, 4, 4), 2, 192),
    # basic with SE: multiply = input 32 + map 32 + gate 2 + new map 32 = 98
    ("basic SE", one_block("basic", se=True), (1, 4, 4), 2, 98),
    # the stem: a 3x4x4 image (48) + its 2x4x4 map (32) = 80; the block needs 32 + 8 = 40
    ("stem", one_block("inverted_residual", stride=2), (3, 4, 4), 2, 80),
    # the classifier: a 1x1 image; pooled 2 + 100 logits = 102
    ("classifier", one_block("inverted_residual"), (1, 1, 1), 100, 102),
]


@pytest.mark.parametrize("name, cfg, shape, classes, expected", HAND, ids=[h[0] for h in HAND])
def test_peak_equals_hand_computed_and_traced(name, cfg, shape, classes, expected):
    assert peak_elements(cfg, shape, classes) == expected
    assert traced_peak_elements(build_student(cfg, shape[0], classes), shape)[0] == expected
    assert peak_memory_bytes(cfg, shape, classes, INT8) == expected
    assert peak_memory_bytes(cfg, shape, classes, FP32) == 4 * expected


def test_peak_is_reached_where_the_definition_says():
    # the residual input's lifetime decides the peak at the depthwise conv (first block's body.1)
    cfg = one_block("inverted_residual", expand=3)
    assert traced_peak_elements(build_student(cfg, 1, 2), (1, 4, 4))[1] == "stages_0_0_body_1_0"


@pytest.mark.parametrize("path", ["search_spaces/mbv2.yaml", "search_spaces/resnet.yaml", "search_spaces/tiny.yaml"])
def test_peak_equals_traced_on_random_members(path):
    space, rng = SearchSpace.load(path), random.Random(3)
    members = [space.smallest(), space.largest()] + [space.random_config(rng) for _ in range(4)]
    for cfg in members:
        for shape in ((1, 28, 28), (3, 9, 7)):
            assert peak_elements(cfg, shape, 10) == traced_peak_elements(build_student(cfg, shape[0], 10), shape)[0], cfg.describe()


def test_size_hand_computed():
    # stem 3x3 1->2: 18 weights + 2 biases; expand 1x1 2->6: 12 + 6; depthwise 3x3 on 6: 54 + 6;
    # projection 6->2: 12 + 2; classifier 2->2: 4 + 2. Weights 100, biases 18 (BN folded).
    cfg = one_block("inverted_residual", expand=3)
    assert weights_of(cfg, (1, 4, 4), 2).weights == 100 and weights_of(cfg, (1, 4, 4), 2).biases == 18
    assert size_bytes(cfg, (1, 4, 4), 2, INT8) == 100 + 4 * 18  # int32 biases
    assert size_bytes(cfg, (1, 4, 4), 2, FP32) == 4 * 118
    # basic + SE + projection 2->4: conv1 72+4, conv2 144+4, SE 4->8->4: 32+8 and 32+4, shortcut 8+4,
    # plus stem 18+2 and classifier 8+2
    cfg = one_block("basic", width=4, se=True)
    assert weights_of(cfg, (1, 4, 4), 2).weights == 18 + 72 + 144 + 32 + 32 + 8 + 8
    assert weights_of(cfg, (1, 4, 4), 2).biases == 2 + 4 + 4 + 8 + 4 + 4 + 2


@pytest.mark.parametrize("path", ["search_spaces/mbv2.yaml", "search_spaces/resnet.yaml"])
def test_size_equals_the_exported_onnx_graph(path, tmp_path):
    from nas_kd.export import Normalised
    from nas_kd.latency import onnx_bytes

    space, rng = SearchSpace.load(path), random.Random(5)
    for cfg in (space.random_config(rng), space.random_config(rng)):
        torch.manual_seed(0)
        model = Normalised(build_student(cfg, 1, 10), [0.5], [0.25])
        graph = tmp_path / "student.onnx"
        graph.write_bytes(onnx_bytes(model, torch.zeros(1, 1, 28, 28, dtype=torch.uint8)))
        for precision in (INT8, FP32):
            assert onnx_size_bytes(graph, precision) == size_bytes(cfg, (1, 28, 28), 10, precision), cfg.describe()


def test_an_elementwise_op_whose_input_is_read_later_gets_a_buffer_of_its_own():
    """The in-place rule holds only where nothing later reads the input: here the ReLU's input is
    added to its output, so both maps live to the addition. (No student of the shipped blocks
    has such a node, so the analytic forms cannot check this part of the tracer.)"""
    from torch import nn

    class ReadAgain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.relu = nn.ReLU()

        def forward(self, x):
            a = self.conv(x)
            return a + self.relu(a)

    # at the addition: the conv's map, the ReLU's and the sum, 4 x 8 x 8 each (the image is freed)
    assert traced_peak_elements(ReadAgain(), (1, 8, 8)) == (3 * 4 * 64, "add")
