"""`train_teacher`: what its one loop must do, each checked by what breaks when it is skipped: the
schedule stepped every batch, the reconstruction term training the decoder, label smoothing
reaching the loss, validation per epoch and the test split once at the end."""

import pytest
import torch

import nas_kd.train
from nas_kd.config import Schedule
from nas_kd.data import load_splits
from nas_kd.models.teacher_training import train_teacher
from nas_kd.models.teachers import build_teacher

CPU = torch.device("cpu")
SCHEDULE = Schedule(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0, crop=False)


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", train_subset=64)


def teacher(recon: bool):
    torch.manual_seed(0)
    return build_teacher("resnet8", 1, 10, reconstruction=(16, 16) if recon else None)


def trained(model, splits, schedule=SCHEDULE):
    train_teacher(model, splits, schedule, device=CPU, seed=0, log=lambda *_: None)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_the_learning_rate_follows_the_schedule_step_by_step(splits, monkeypatch):
    made = []
    real = nas_kd.train.build_scheduler

    def build_scheduler(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(nas_kd.train, "build_scheduler", build_scheduler)
    trained(teacher(False), splits)
    steps = SCHEDULE.epochs * (len(splits.train) // SCHEDULE.batch_size)
    assert made[0].last_epoch == steps and made[0].get_last_lr()[0] == pytest.approx(0.0, abs=1e-9)  # cosine to zero


def test_the_reconstruction_term_trains_the_decoder(splits):
    model = teacher(True)
    before = {k: v.detach().clone() for k, v in model.decoder.named_parameters()}
    trained(model, splits)
    # Only the reconstruction MSE reaches the decoder: without it the decoder would not move.
    assert all(not torch.equal(before[k], v) for k, v in model.decoder.named_parameters() if v.ndim > 1)


@pytest.mark.parametrize("recon", [False, True], ids=["plain", "with-decoder"])
def test_label_smoothing_reaches_the_loss(splits, recon):
    plain = trained(teacher(recon), splits)
    smoothed = trained(teacher(recon), splits, SCHEDULE.replace(label_smoothing=0.2))
    assert any(not torch.equal(plain[k], smoothed[k]) for k in plain)
    assert all(torch.equal(plain[k], v) for k, v in trained(teacher(recon), splits).items())  # and the run is otherwise deterministic


def test_epochs_are_scored_on_validation_and_the_test_split_once_at_the_end(splits, monkeypatch):
    from test_train import record_split_reads

    read = record_split_reads(monkeypatch, nas_kd.train, splits)
    trained(teacher(True), splits)
    assert read == ["val", "val", "test"]
