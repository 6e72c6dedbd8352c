"""StudentConfig (validation, JSON, describe) and build_student (stage interface, any input size)."""

from __future__ import annotations

import json
import random

import optuna
import pytest
import torch

from nas_kd.errors import UserError
from nas_kd.models.staged import ClassifierHead, StagedNet
from nas_kd.models.student import StageConfig, StudentConfig, build_student
from nas_kd.space import SearchSpace

SPACES = ["search_spaces/mbv2.yaml", "search_spaces/resnet.yaml"]



IR = StudentConfig(
    block="inverted_residual",
    stem_width=16,
    stages=(StageConfig(1, 16, 1), StageConfig(2, 24, 2, kernel=5, expand=6, se=True)),
)


def test_describe_is_short_and_canonical():
    assert IR.describe() == "ir c16 s1:d1w16k3e1 s2:d2w24k5e6+se"
    basic = StudentConfig("basic", 8, (StageConfig(2, 32, 2, se=True),))
    assert basic.describe() == "res c8 s1:d2w32k3+se"


@pytest.mark.parametrize("path", SPACES)
def test_json_and_dict_round_trip(path):
    space = SearchSpace.load(path)
    rng = random.Random(1)
    for _ in range(20):
        cfg = space.random_config(rng)
        assert StudentConfig.from_json(cfg.to_json()) == cfg
        assert StudentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        assert hash(StudentConfig.from_json(cfg.to_json())) == hash(cfg)


def test_json_is_canonical():
    same = StudentConfig.from_dict(json.loads(IR.to_json()))
    assert same.to_json() == IR.to_json()
    assert json.loads(IR.to_json())["stages"][1] == {
        "depth": 2,
        "width": 24,
        "stride": 2,
        "kernel": 5,
        "expand": 6,
        "se": True,
    }


def _edit(change):
    data = IR.to_dict()
    change(data)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(colour=1), "invalid student config: colour is not a known key"),
        (lambda d: d.pop("stem_width"), "invalid student config: stem_width is missing"),
        (lambda d: d.update(block="dense"), "invalid student config: block 'dense' is unknown"),
        (lambda d: d["stages"][0].update(stride=3), "stage1.stride must be one of 1, 2, got 3"),
        (lambda d: d["stages"][1].update(width=0), "stage2.width must be at least 1, got 0"),
        (lambda d: d["stages"][1].update(kernel=4), "stage2.kernel must be odd, got 4"),
        (lambda d: d["stages"][1].update(depth=True), "stage2.depth must be an integer, got True"),
        (lambda d: d["stages"][1].update(se="yes"), "stage2.se must be true or false, got 'yes'"),
        (lambda d: d["stages"][0].pop("width"), "stage1.width is missing"),
        (lambda d: d["stages"][0].update(wdth=3), "stage1.wdth is not a known key"),
        (lambda d: d.update(stages=[]), "stages must be a non-empty tuple"),
        (lambda d: d.update(stages={}), "stages must be a list, got dict"),
        (lambda d: d.update(block="basic"), "stage2.expand must be 1 for basic blocks, got 6"),
        (lambda d: d["stages"][1].update(expand=0), "stage2.expand must be at least 1, got 0"),
        (lambda d: d.update(stem_stride=3), "stem_stride must be one of 1, 2, got 3"),
        (lambda d: d.update(stem_kernel=2), "stem_kernel must be odd, got 2"),
    ],
)
def test_from_dict_rejects_with_key_and_problem(change, message):
    with pytest.raises(UserError) as e:
        StudentConfig.from_dict(_edit(change))
    assert message in str(e.value)


def test_from_json_rejects_bad_json():
    with pytest.raises(UserError, match="invalid student config: not valid JSON"):
        StudentConfig.from_json("{not json")


def test_build_student_has_stage_interface():
    net = build_student(IR, in_channels=3, num_classes=7)
    assert isinstance(net, StagedNet) and isinstance(net.head, ClassifierHead)
    assert len(net.stages) == 2 and net.stage_channels == (16, 24) and net.num_classes == 7
    maps, logits = net.forward_stages(torch.randn(2, 3, 32, 32))
    assert [m.shape for m in maps] == [(2, 16, 32, 32), (2, 24, 16, 16)]
    assert logits.shape == (2, 7)
    assert torch.equal(net.eval()(torch.ones(1, 3, 32, 32)), net.forward_stages(torch.ones(1, 3, 32, 32))[1])


def test_build_student_rejects_bad_shapes():
    with pytest.raises(UserError, match="num_classes must be at least 2"):
        build_student(IR, 3, 1)
    with pytest.raises(UserError, match="in_channels must be at least 1"):
        build_student(IR, 0, 10)


@pytest.mark.parametrize("path", SPACES)
def test_50_sampled_students_train_step_without_nan(path):
    space = SearchSpace.load(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    torch.manual_seed(0)
    for i in range(50):
        cfg = space.sample(study.ask())
        c, h = (1, 8) if i % 2 == 0 else (3, 32)  # both extremes of the supported inputs
        net = build_student(cfg, c, 10)
        maps, logits = net.forward_stages(torch.randn(2, c, h, h))
        assert [m.shape[1] for m in maps] == list(cfg.stage_channels)
        assert all(m.shape[-1] >= 1 for m in maps)
        logits.logsumexp(1).mean().backward()
        assert torch.isfinite(logits).all(), cfg.describe()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None), (
            cfg.describe()
        )


@pytest.mark.parametrize("path", SPACES)
def test_largest_student_on_8x8_and_32x32(path):
    cfg = SearchSpace.load(path).largest()
    for c, h in ((1, 8), (3, 32)):
        maps, logits = build_student(cfg, c, 10).forward_stages(torch.randn(2, c, h, h))
        assert logits.shape == (2, 10) and maps[-1].shape[-1] >= 1
        logits.sum().backward()


def test_json_keys_are_sorted_as_in_every_stored_study():
    """Studies, kept retrain runs and re-screen scores are keyed by this exact string: its form
    (sorted keys, no spaces) must not drift, or an old study's runs no longer match."""
    cfg = StudentConfig("basic", 8, (StageConfig(1, 16, 1),))
    assert cfg.to_json() == '{"block":"basic","stages":[{"depth":1,"expand":1,"kernel":3,"se":false,"stride":1,"width":16}],"stem_kernel":3,"stem_stride":1,"stem_width":8}'
