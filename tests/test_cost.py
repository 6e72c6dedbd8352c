"""Cost model: fvcore reference, thop cross-check, the skip allow-list, the analytic twin."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nas_kd.cost import (
    NOT_COUNTED,
    Cost,
    UncountedOperatorError,
    analytic_cost,
    analytic_macs,
    count_macs,
    measure,
    thop_macs,
    torch_threads,
)
from nas_kd.models.student import StageConfig, StudentConfig, build_student
from nas_kd.space import SearchSpace

SPACES = ["search_spaces/mbv2.yaml", "search_spaces/resnet.yaml"]
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]



def every_block_type() -> list[StudentConfig]:
    """Each block type with and without SE, with expansion, projection and identity shortcuts."""
    out = []
    for block, expand in (("inverted_residual", 6), ("basic", 1)):
        for se in (False, True):
            stages = (StageConfig(2, 8, 1, se=se), StageConfig(2, 16, 2, 5, expand, se))
            out.append(StudentConfig(block, 8, stages))
    return out


def test_whole_student_matches_hand_formula():
    cfg = StudentConfig("basic", 4, (StageConfig(1, 8, 2),), stem_kernel=3, stem_stride=1)
    stem = 1 * 4 * 9 * 8 * 8  # 3x3 conv 1->4 on 8x8
    block = 4 * 8 * 9 * 4 * 4 + 8 * 8 * 9 * 4 * 4 + 4 * 8 * 4 * 4  # conv1, conv2, 1x1 projection at 4x4
    head = 8 * 10
    bn = 2 * (4 + 8 + 8 + 8)  # weight and bias of each BN
    params = 1 * 4 * 9 + 4 * 8 * 9 + 8 * 8 * 9 + 4 * 8 + bn + 8 * 10 + 10
    assert measure(cfg, (1, 8, 8), 10) == Cost(macs=stem + block + head, params=params)


def test_measure_params_equal_module_parameters():
    for cfg in every_block_type():
        net = build_student(cfg, 3, 10)
        assert measure(cfg, (3, 16, 16), 10).params == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("cfg", every_block_type(), ids=lambda c: c.describe())
def test_thop_agrees_within_5_percent(cfg):
    for shape in ((1, 28, 28), (3, 32, 32)):
        reference = measure(cfg, shape, 10).macs
        assert abs(thop_macs(cfg, shape, 10) - reference) <= 0.05 * reference


@pytest.mark.parametrize("path", SPACES)
def test_thop_agrees_on_space_extremes(path):
    space = SearchSpace.load(path)
    for cfg in (space.smallest(), space.largest()):
        reference = measure(cfg, (3, 32, 32), 10).macs
        assert abs(thop_macs(cfg, (3, 32, 32), 10) - reference) <= 0.05 * reference


def test_allow_list_is_exactly_what_is_skipped():
    skipped = set()
    for cfg in every_block_type():
        _, ops = count_macs(build_student(cfg, 3, 10).eval(), torch.zeros(1, 3, 16, 16))
        assert set(ops) <= set(NOT_COUNTED), cfg.describe()
        skipped |= set(ops)
    assert skipped == set(NOT_COUNTED)


@pytest.mark.parametrize("layer", [nn.GELU(), nn.MaxPool2d(2), nn.Hardswish()])
def test_unknown_operator_is_an_error_not_zero(layer):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), layer)
    with pytest.raises(UncountedOperatorError, match="fvcore cannot count aten::"):
        count_macs(model, torch.zeros(1, 3, 8, 8))


def test_count_macs_is_quiet(capfd, caplog):
    with caplog.at_level("DEBUG"):
        count_macs(build_student(every_block_type()[1], 3, 10).eval(), torch.zeros(1, 3, 8, 8))
    out, err = capfd.readouterr()
    assert out == "" and err == "" and not [r for r in caplog.records if r.name.startswith("fvcore")]


@pytest.mark.parametrize("path", SPACES)
def test_analytic_equals_fvcore_on_sampled_configs(path):
    space = SearchSpace.load(path)
    rng = random.Random(7)
    configs = [space.smallest(), space.largest(), *space.uniform_members()]
    configs += [space.random_config(rng) for _ in range(24)]
    for i, cfg in enumerate(configs):
        shape = SHAPES[i % len(SHAPES)]
        classes = (10, 100)[i % 2]
        assert analytic_cost(cfg, shape, classes) == measure(cfg, shape, classes), cfg.describe()
        assert analytic_macs(cfg, shape, classes) == measure(cfg, shape, classes).macs


def test_analytic_equals_fvcore_with_strided_stem_and_odd_sizes():
    cfg = StudentConfig(
        "inverted_residual", 8, (StageConfig(1, 8, 2, 7, 3, True),), stem_kernel=5, stem_stride=2
    )
    for shape in ((1, 9, 13), (3, 1, 1), (3, 33, 31)):
        assert analytic_cost(cfg, shape, 3) == measure(cfg, shape, 3)


def test_analytic_equals_fvcore_where_a_stride_1_block_changes_width():
    """A shortcut projection without a stride (the width changes, the map does not): no shipped
    space has one (every resnet stage strides), a user's space may."""
    for block, expand in (("basic", 1), ("inverted_residual", 3)):
        cfg = StudentConfig(block, 8, (StageConfig(2, 12, 1, se=True, expand=expand), StageConfig(1, 16, 2)))
        assert analytic_cost(cfg, (1, 12, 12), 10) == measure(cfg, (1, 12, 12), 10), cfg.describe()


def test_torch_threads_sets_the_count_for_its_block_only():
    before = torch.get_num_threads()
    other = before + 1  # the suite runs at 1 thread: setting 1 again would prove nothing
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(other):
        raise RuntimeError("a failed trace")
    assert torch.get_num_threads() == before


def test_measure_is_memoised_by_canonical_config():
    cfg = every_block_type()[0]
    first = measure(cfg, (1, 8, 8), 10)
    same = StudentConfig.from_json(cfg.to_json())
    assert measure(same, [1, 8, 8], 10) is first
    assert measure(cfg, (1, 8, 8), 11) is not first


def test_cost_describe():
    assert Cost(2_000_000, 150_000).describe() == "2.00M MACs, 150.00k params"


def test_thop_is_a_cross_check_its_absence_does_not_stop_a_report(monkeypatch):
    """thop imports distutils, which Python 3.12 lacks without setuptools: then no thop figure."""
    import sys

    monkeypatch.setitem(sys.modules, "thop", None)  # import thop raises ImportError
    cfg = SearchSpace.load(SPACES[0]).smallest()
    assert thop_macs(cfg, (1, 28, 28), 10) is None
