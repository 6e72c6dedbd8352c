"""The GPU step's switches (`nas_kd.device.StepOptions`) and the deferred NaN/inf check.

The switches change what `autocast` and `memory_format` hand out for a CUDA device, which needs no
GPU to check; the deferred check runs the same on a CPU when asked for (``check_every`` > 1)."""

import warnings

import pytest
import torch
from test_distill_step import TINY

from nas_kd.config import Schedule
from nas_kd.data import load_splits
from nas_kd.device import (
    CHECK_EVERY_GPU,
    StepOptions,
    autocast,
    check_interval,
    configure_step,
    memory_format,
    parse_step_options,
)
from nas_kd.distill import train
from nas_kd.models.student import build_student
from nas_kd.models.teachers import build_teacher
from nas_kd.train import NonFiniteLossError, check_finite, evaluate, make_loaders, reset_finite_checks

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
NAN = torch.tensor(float("nan"))


@pytest.fixture(autouse=True)
def default_step():
    """Each test starts and ends with the defaults: the options are process-wide."""
    configure_step(StepOptions())
    reset_finite_checks()
    yield
    configure_step(StepOptions())
    reset_finite_checks()


def test_parse_round_trips_and_defaults():
    assert parse_step_options(None) == parse_step_options("default") == StepOptions()
    opts = parse_step_options("bf16=0, check_every=8")
    assert opts == StepOptions(bf16=False, check_every=8)
    assert parse_step_options(opts.describe()) == opts
    assert parse_step_options("check_every=auto").check_every is None


def test_switches_change_what_a_cuda_step_gets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA autocast is off without a GPU
        assert isinstance(autocast(CUDA), torch.autocast)
        assert memory_format(CUDA) == torch.channels_last
        configure_step(StepOptions(bf16=False, channels_last=False))
        assert not isinstance(autocast(CUDA), torch.autocast)
        assert memory_format(CUDA) == torch.contiguous_format
    assert memory_format(CPU) == torch.channels_last  # the CPU takes NHWC whatever the GPU switch says


def test_the_graph_switch_brings_what_a_capture_needs_on_a_gpu_only(monkeypatch):
    """A captured step needs autocast without its cast cache (cached casts of the weights would be
    stale in later replays) and the fused optimisers (only they read the learning rate from the
    device tensor the scheduler fills), whatever ``fused`` says; a CPU never captures. And the
    ``benchmark`` switch reaches cuDNN where there is a GPU."""
    from nas_kd import device

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA autocast is off without a GPU
        assert autocast(CUDA)._cache_enabled
        configure_step(StepOptions(graph=True, fused=False))
        assert not autocast(CUDA)._cache_enabled
    assert device.fused_optimisers(CUDA) and device.graphed_steps(CUDA)
    assert not device.fused_optimisers(CPU) and not device.graphed_steps(CPU)
    monkeypatch.setattr(device, "cuda_present", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    configure_step(StepOptions(benchmark=False))
    assert torch.backends.cudnn.benchmark is False


def test_the_check_waits_on_a_gpu_only_by_default():
    assert check_interval(CPU) == 1 and check_interval(CUDA) == CHECK_EVERY_GPU
    configure_step(StepOptions(check_every=5))
    assert check_interval(CPU) == check_interval(CUDA) == 5


def test_every_step_check_raises_at_once():
    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        check_finite(NAN)


def test_deferred_check_raises_at_the_interval_with_the_first_bad_value():
    configure_step(StepOptions(check_every=4))
    check_finite(torch.tensor(1.0))
    check_finite(torch.tensor(float("inf")), "distillation loss")
    check_finite(NAN, "distillation loss")  # three recorded, none read back yet
    with pytest.raises(NonFiniteLossError, match="distillation loss became inf"):
        check_finite(torch.tensor(2.0), "distillation loss")
    for _ in range(8):  # read back and cleared: finite losses pass again
        check_finite(torch.tensor(1.0))


def test_evaluate_reads_deferred_checks_first():
    configure_step(StepOptions(check_every=1000))
    splits = load_splits("synthetic", train_subset=64)
    _, val, _ = make_loaders(splits, batch_size=32, device=CPU, seed=0)
    model = build_student(TINY, 1, 10)
    check_finite(NAN)
    with pytest.raises(NonFiniteLossError):
        evaluate(model, val)
    assert 0 <= evaluate(model, val) <= 1  # cleared by the read


def test_a_diverged_training_still_fails_before_its_accuracy_is_read():
    """A sync only every 1000 steps never comes within these 4 steps: the epoch's evaluation
    must still stop the run, as the per-step check did."""
    configure_step(StepOptions(check_every=1000))
    splits = load_splits("synthetic", train_subset=64)
    student = build_student(TINY, 1, 10)
    with torch.no_grad():
        student.head.fc.weight[0, 0] = float("nan")
    schedule = Schedule(epochs=1, batch_size=16, lr=0.05, warmup_epochs=0)
    seen = []
    with pytest.raises(NonFiniteLossError, match="distillation loss became nan"):
        train(student, build_teacher("resnet8", 1, 10), splits, schedule, "kd", device=CPU, seed=0, epoch_callback=lambda e, a: seen.append(a))
    assert seen == []


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    import random

    import numpy as np

    from nas_kd.device import seed_everything

    def draws():
        g = seed_everything(5)
        return random.random(), float(np.random.rand()), float(torch.rand(())), float(torch.rand((), generator=g))

    first, again = draws(), draws()
    assert first == again
    seed_everything(6)  # another seed, other draws
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) != first[:3]
