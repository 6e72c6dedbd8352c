"""The training loop: metrics, the per-epoch callback, the test set only on request."""

import pytest
import torch
from test_distill_step import TINY

from nas_kd.config import Schedule
from nas_kd.data import load_splits
from nas_kd.distill import train
from nas_kd.models.student import build_student
from nas_kd.models.teachers import build_teacher

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", train_subset=64)


class Pruned(Exception):
    pass


def test_train_reports_per_epoch_and_reads_test_only_when_asked(splits):
    seen = []
    teacher = build_teacher("resnet8", 1, 10)
    schedule = Schedule(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0)
    m = train(build_student(TINY, 1, 10), teacher, splits, schedule, "full", device=CPU, seed=0, epoch_callback=lambda e, a: seen.append((e, a)))
    assert [e for e, _ in seen] == [1, 2] and m["val_accuracy"] == seen[-1][1]
    assert "test_accuracy" not in m and m["mode"] == "full"
    assert {"ce", "kd", "feat", "desc", "disc"} <= set(m["history"][-1]["losses"])
    for record in m["history"]:  # each discriminator's accuracy per epoch, and how far it pushed
        assert set(record["disc_accuracy"]) == {"adv_feat", "adv_logit", "adv_logit_class"}
        assert all(0 <= v <= 1 for v in record["disc_accuracy"].values())
        assert set(record["adv_gate"]) <= {"adv_feat", "adv_logit", "adv_logit_class"} and all(0 <= v <= 1 for v in record["adv_gate"].values())
    assert m["images_per_second"] > 0 and m["train_seconds"] > 0 and m["teacher_seconds"] > 0
    m = train(build_student(TINY, 1, 10), None, splits, schedule.replace(epochs=1), "ce", device=CPU, seed=0, evaluate_test=True)
    assert 0 <= m["test_accuracy"] <= 1


def test_the_callback_can_stop_training(splits):
    def prune(epoch, acc):
        raise Pruned(epoch)

    schedule = Schedule(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0)
    with pytest.raises(Pruned, match="1"):
        train(build_student(TINY, 1, 10), build_teacher("resnet8", 1, 10), splits, schedule, "kd", device=CPU, seed=0, epoch_callback=prune)


def test_same_seed_same_result(splits):
    schedule = Schedule(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0)
    teacher = build_teacher("resnet8", 1, 10)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)  # the student's initial weights are the caller's to seed
        runs.append(train(build_student(TINY, 1, 10), teacher, splits, schedule, "xu", device=CPU, seed=3)["history"][0])
    assert runs[0]["losses"] == runs[1]["losses"] and runs[0]["val_accuracy"] == runs[1]["val_accuracy"]


def test_epoch_means_cost_two_ops_a_step_and_follow_keys_that_join_late():
    """A step's figures are added as one stacked vector (outside a CUDA-graph step every op is a
    launch), and a key that joins mid-epoch (the adversarial terms after their warm-up) is
    averaged over the steps that had it."""
    from bench.step_ops import ops_dispatched
    from nas_kd.distill.trainer import _keyed, _Means

    means = _Means()
    early = {**_keyed("losses", {"ce": torch.tensor(1.0), "kd": torch.tensor(2.0)}), **_keyed("adv_gate", {})}
    late = {**_keyed("losses", {"ce": torch.tensor(3.0), "kd": torch.tensor(4.0), "adv": torch.tensor(8.0)}), **_keyed("disc_accuracy", {"feat": torch.tensor(0.5)})}
    means.add(early)
    means.add(early)  # the second add of a key set: a stack and an add
    assert sum(ops_dispatched(means.add, early).values()) == 2
    assert sum(ops_dispatched(means.add, late).values()) == 1  # a new key set: the stack alone
    means.add(late)
    assert means.means_by_group(("losses", "disc_accuracy", "adv_gate")) == {
        "losses": {"ce": pytest.approx(1.8), "kd": pytest.approx(2.8), "adv": 8.0},
        "disc_accuracy": {"feat": 0.5},
        "adv_gate": {},
    }


def test_epochs_are_scored_on_validation_and_the_test_split_once_at_the_end(splits, monkeypatch):
    """What each evaluation reads: the validation split after every epoch (what a search selects
    on), the test split once after the last, and only when asked (the synthetic splits differ in
    size: 240 and 600 examples)."""
    from test_train import record_split_reads

    import nas_kd.distill.trainer as trainer

    read = record_split_reads(monkeypatch, trainer, splits)
    schedule = Schedule(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0)
    train(build_student(TINY, 1, 10), None, splits, schedule, "ce", device=CPU, seed=0)
    assert read == ["val", "val"]
    read.clear()
    train(build_student(TINY, 1, 10), None, splits, schedule, "ce", device=CPU, seed=0, evaluate_test=True)
    assert read == ["val", "val", "test"]


def test_the_objective_is_built_with_the_teachers_measured_map_scales(splits, monkeypatch):
    """The map terms divide by each teacher stage's root mean square (nas_kd.distill.map_scale),
    measured on the run's own training data; a mode without map terms needs none."""
    import nas_kd.distill.trainer as trainer
    from nas_kd.distill.map_scale import teacher_map_scales

    given = []
    real = trainer.build_step

    def build_step(*a, map_scales=None, **k):
        given.append(map_scales)
        return real(*a, map_scales=map_scales, **k)

    monkeypatch.setattr(trainer, "build_step", build_step)
    teacher = build_teacher("resnet8", 1, 10)
    schedule = Schedule(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0, crop=False)
    for mode in ("ktan", "kd"):
        train(build_student(TINY, 1, 10), teacher, splits, schedule, mode, device=CPU, seed=0)
    loader = trainer.make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=False)[0]
    assert given[0] is not None and given[0] == teacher_map_scales(teacher, loader) and given[1] is None


def test_the_run_reports_its_last_epochs_accuracy_and_all_its_training_time(splits, monkeypatch):
    """Bookkeeping read on a clock and a scorer the test controls: each epoch's training takes 1 s
    of the clock, each validation returns a new score. The run's accuracy is the last epoch's
    (what the trained student scores), its time the sum of every epoch's."""
    import types

    import nas_kd.distill.trainer as trainer

    clock = iter(range(1000))
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    scores = iter([0.25, 0.5, 0.75])
    monkeypatch.setattr(trainer, "evaluate", lambda model, loader: next(scores))
    schedule = Schedule(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0)
    m = train(build_student(TINY, 1, 10), None, splits, schedule, "ce", device=CPU, seed=0)
    assert [r["val_accuracy"] for r in m["history"]] == [0.25, 0.5, 0.75] and m["val_accuracy"] == 0.75
    assert [r["seconds"] for r in m["history"]] == [1.0, 2.0, 3.0] and m["train_seconds"] == 3.0
    per_epoch = sum(len(b.y) for b in trainer.make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=schedule.crop)[0].batches())
    assert m["images_per_second"] == pytest.approx(3 * per_epoch / 3.0)


def test_the_run_seeds_everything_it_draws_whatever_the_caller_drew_before(splits):
    """The logit discriminator's dropout and the batch order come from ``seed`` alone: a caller's
    earlier use of the global generators (another trial, a probe) changes nothing."""
    schedule = Schedule(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0)
    teacher = build_teacher("resnet8", 1, 10)
    runs = []
    for drawn in (1, 50):
        torch.manual_seed(3)
        student = build_student(TINY, 1, 10)
        torch.rand(drawn)  # the caller's own draws, different each time
        runs.append(train(student, teacher, splits, schedule, "xu", device=CPU, seed=3)["history"][0])
    assert runs[0]["losses"] == runs[1]["losses"]


def test_one_step_trains_the_adapters_with_the_student():
    """The adapters (student maps to the teacher's channels) are the student's side of the map
    terms: its optimiser must train them, or feat, desc and the feature discriminator judge a
    fixed random projection."""
    from test_distill_step import batch, make

    step = make("ktan")[0]  # built by trainer.build_step
    before = {k: p.detach().clone() for k, p in step.objective.adapters.named_parameters()}
    step(*batch())
    assert before and all(not torch.equal(before[k], p) for k, p in step.objective.adapters.named_parameters())
