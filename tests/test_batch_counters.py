"""Batch-norm layers without the num_batches_tracked counter (nas_kd.models.batch_counters): what
trains every step launches no counter op, updates its running statistics exactly as before, and
still loads the state_dicts saved with counters."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bench.step_ops import ops_dispatched
from nas_kd.distill.adapters import StageAdapters
from nas_kd.distill.discriminators import LogitDiscriminator
from nas_kd.models.batch_counters import COUNTER, without_batch_counters
from nas_kd.models.student import StageConfig, StudentConfig, build_student

CFG = StudentConfig("inverted_residual", 8, (StageConfig(1, 8, 1), StageConfig(2, 16, 2, expand=3, se=True)))


def batch_norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def with_counters(module: nn.Module) -> nn.Module:
    """A copy with every batch-norm counter restored: what PyTorch's layers are by default."""
    out = copy.deepcopy(module)
    for bn in batch_norms(out):
        bn.register_buffer(COUNTER, torch.tensor(0, dtype=torch.long))
    return out


def test_what_trains_every_step_keeps_no_counter():
    student = build_student(CFG, 1, 10)
    adapters = StageAdapters([(0, 0), (1, 1)], [8, 16], [4, 6], [(8, 8), (4, 4)])
    disc = LogitDiscriminator(10)
    for module in (student, adapters, disc):
        assert batch_norms(module)
        assert all(getattr(bn, COUNTER) is None for bn in batch_norms(module))
        assert not [k for k in module.state_dict() if k.endswith(COUNTER)]


def test_a_training_forward_launches_one_op_fewer_per_layer():
    torch.manual_seed(0)
    student = build_student(CFG, 1, 10).train()
    x = torch.randn(4, 1, 12, 12)
    ops = ops_dispatched(student, x)
    before = ops_dispatched(with_counters(student), x)
    layers = len(batch_norms(student))
    assert sum(before.values()) - sum(ops.values()) == layers
    assert before["add_"] - ops.get("add_", 0) == layers


def test_running_statistics_update_exactly_as_with_the_counter():
    torch.manual_seed(0)
    student = build_student(CFG, 1, 10).train()
    reference = with_counters(student)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(6, 1, 12, 12, generator=g) * 2 + 0.5
        student(x)
        reference(x)
    for bn, ref in zip(batch_norms(student), batch_norms(reference), strict=True):
        assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # they moved
        assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)
    assert all(int(getattr(bn, COUNTER)) == 3 for bn in batch_norms(reference))  # the reference did count


def test_a_layer_without_momentum_keeps_its_counter():
    # momentum=None means a cumulative average, computed from the counter: removing it would freeze
    # the running statistics.
    net = without_batch_counters(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, momentum=None), nn.BatchNorm2d(2)))
    assert getattr(net[1], COUNTER) is not None and getattr(net[2], COUNTER) is None


def test_a_state_dict_saved_with_counters_loads_strictly():
    torch.manual_seed(0)
    trained = build_student(CFG, 1, 10).train()
    trained(torch.randn(6, 1, 12, 12))
    saved = with_counters(trained).state_dict()  # as a winner.pt written before the change
    assert any(k.endswith(COUNTER) for k in saved)
    fresh = build_student(CFG, 1, 10)
    fresh.load_state_dict(saved)  # strict
    x = torch.randn(3, 1, 12, 12)
    assert torch.equal(fresh.eval()(x), trained.eval()(x))
    # A legacy layout (version 1 metadata: BN's own loader adds a zero counter) loads as well.
    legacy = copy.copy(saved)
    legacy._metadata = {k: {**v, "version": 1} for k, v in saved._metadata.items()}
    build_student(CFG, 1, 10).load_state_dict(legacy)
