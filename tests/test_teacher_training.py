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


def trained(model, splits, schedule=SCHEDULE, seed=0, **options):
    """``model``'s parameters after `train_teacher` (``options``: its keyword arguments)."""
    train_teacher(model, splits, schedule, device=CPU, seed=seed, log=lambda *_: None, **options)
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


def test_the_reconstruction_term_trains_the_backbone_too_and_its_weight_counts(splits):
    """The decoder reads the deepest map with its gradient: the reconstruction shapes the
    teacher's features (what `zhang` distils), and ``recon_weight`` scales it."""
    plain = trained(teacher(False), splits)
    moved = {k: v for k, v in trained(teacher(True), splits, recon_weight=1.0).items() if not k.startswith("decoder.")}
    assert any(not torch.equal(plain[k], v) for k, v in moved.items())  # the same backbone and batches: only the MSE differs
    unweighted = {k: v for k, v in trained(teacher(True), splits, recon_weight=0.0).items() if not k.startswith("decoder.")}
    assert all(torch.equal(plain[k], v) for k, v in unweighted.items())  # weight 0: cross-entropy alone
    assert any(not torch.equal(moved[k], v) for k, v in unweighted.items())


def test_the_seed_and_the_crops_reach_the_run(splits):
    base = trained(teacher(False), splits)
    for change in ({"seed": 1}, {"schedule": SCHEDULE.replace(crop=True)}):
        got = trained(teacher(False), splits, **change)  # the same initial weights: only the batches differ
        assert any(not torch.equal(base[k], v) for k, v in got.items()), change


def test_a_model_handed_over_in_eval_mode_trains_in_training_mode(splits):
    model = teacher(False).eval()
    means = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("running_mean")}
    trained(model, splits)
    assert all(not torch.equal(means[k], v) for k, v in model.state_dict().items() if k in means)  # batch statistics were used and tracked


def test_the_metrics_are_the_last_epochs_and_count_every_image(splits):
    lines = []
    metrics = train_teacher(teacher(False), splits, SCHEDULE.replace(epochs=3, lr=0.2), device=CPU, seed=0, log=lines.append)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3] and len(lines) == 3
    assert metrics["val_accuracy"] == metrics["history"][-1]["val_accuracy"]
    assert len({h["val_accuracy"] for h in metrics["history"]}) > 1  # so the last is told from the others
    images = 3 * (len(splits.train) // SCHEDULE.batch_size) * SCHEDULE.batch_size
    assert metrics["images_per_second"] * metrics["train_seconds"] == pytest.approx(images, rel=1e-6)


def test_a_diverging_teacher_stops_with_the_reason(splits):
    from nas_kd.errors import NonFiniteLossError

    model = teacher(False)
    with torch.no_grad():
        model.head.fc.bias[0] = float("nan")  # a NaN in the logits: the first loss is NaN
    with pytest.raises(NonFiniteLossError, match="teacher loss"):
        trained(model, splits)
