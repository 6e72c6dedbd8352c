"""nas_kd.train's shared pieces: evaluation in eval mode, the optimiser's groups, the schedule's
shape. (The deferred NaN check has its own file: test_step_options.py.)"""

import math

import pytest
import torch
from torch import nn

from nas_kd.config import Schedule
from nas_kd.data import load_splits
from nas_kd.train import build_optimizer, build_scheduler, evaluate, make_loaders

CPU = torch.device("cpu")


def record_split_reads(monkeypatch, owner, splits) -> list[str]:
    """Replace ``owner.evaluate`` (nas_kd.train's, or a module that imported it) with one that also
    records which split each call scored, "val" or "test", told apart by size; returns the record."""
    names = {len(splits.val.y): "val", len(splits.test.y): "test"}
    assert len(names) == 2, "the splits must differ in size to be told apart"
    read: list[str] = []
    real = owner.evaluate

    def evaluate(model, loader):
        read.append(names.get(loader.num_examples, "?"))
        return real(model, loader)

    monkeypatch.setattr(owner, "evaluate", evaluate)
    return read


class ModeRecorder(nn.Module):
    """A classifier that records whether it was in training mode at each forward pass."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16 * 16, 10)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_runs_in_eval_mode_and_restores_the_mode_it_found(training):
    """Batch-norm statistics and dropout must be the inference ones while scoring, and a model
    scored between training steps must go on training in training mode."""
    splits = load_splits("synthetic", train_subset=64)
    loader = make_loaders(splits, batch_size=32, device=CPU, seed=0)[1]
    model = ModeRecorder().train(training)
    accuracy = evaluate(model, loader)
    assert 0.0 <= accuracy <= 1.0 and model.modes and not any(model.modes)
    assert model.training is training


def test_weight_decay_spares_biases_and_norm_weights_and_momentum_is_nesterov():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    schedule = Schedule(epochs=1, batch_size=8, lr=0.1, weight_decay=5e-4, momentum=0.9)
    opt = build_optimizer(model.named_parameters(), schedule)
    decayed, spared = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and spared["weight_decay"] == 0.0
    assert {p.ndim for p in decayed["params"]} == {2, 4} and {p.ndim for p in spared["params"]} == {1}
    assert len(decayed["params"]) + len(spared["params"]) == len(list(model.parameters()))
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_the_schedule_warms_up_linearly_then_follows_a_cosine_to_zero():
    schedule = Schedule(epochs=2, batch_size=8, lr=1.0, warmup_epochs=0.5)
    steps_per_epoch = 10  # 20 steps: 5 of warm-up, 15 of cosine
    opt = build_optimizer([("w", nn.Parameter(torch.zeros(2, 2)))], schedule)
    scheduler = build_scheduler(opt, schedule, steps_per_epoch)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert rates[:5] == pytest.approx([(i + 1) / 6 for i in range(5)])
    assert rates[5:] == pytest.approx([0.5 * (1 + math.cos(math.pi * i / 15)) for i in range(15)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
