"""A teacher cache filled once and opened elsewhere: the same outputs, mapped not copied, and
refused when it belongs to another teacher, other data or a mode it does not cover."""

import dataclasses
from pathlib import Path

import pytest
import torch
from test_distill_cache import SCHEDULE, count_calls, teacher, with_shifted
from test_distill_step import TINY

from nas_kd.data import load_splits
from nas_kd.distill import MODES, TeacherCache, train
from nas_kd.distill.shared_cache import open_cache, shared_file, write_cache
from nas_kd.models.student import build_student
from nas_kd.train import make_loaders

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def flipping():
    splits = load_splits("synthetic", train_subset=96)
    return dataclasses.replace(splits, info=dataclasses.replace(splits.info, flip=True))


def loader_of(splits, crop=False):
    return make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=crop)[0]


def mapped(path: Path) -> bool:
    """Whether this process maps ``path`` (a view of its pages, not a private copy)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


def test_an_opened_cache_holds_the_very_outputs_mapped_from_the_file_and_trains_without_the_teacher(flipping, tmp_path):
    built = TeacherCache(teacher(), loader_of(flipping), "full", num_classes=10)
    path = tmp_path / "cache.pt"
    write_cache(built, path)
    fresh_teacher, fresh_loader = teacher(), loader_of(flipping)  # another process's objects: equal, not the same
    opened, why = open_cache(path, fresh_teacher, fresh_loader, MODES["full"])
    assert opened is not None and why == ""
    assert torch.equal(opened.logits, built.logits) and opened.map_stages == built.map_stages == (0, 1, 2)
    assert all(torch.equal(opened.maps[j], built.maps[j]) for j in built.maps)
    assert all(torch.equal(a, b) for a, b in zip(opened.descriptors, built.descriptors, strict=True))
    assert opened.attention_state.keys() == built.attention_state.keys() and all(torch.equal(opened.attention_state[k], built.attention_state[k]) for k in built.attention_state)
    assert mapped(path)  # on a CPU the workers share the file's pages
    calls = count_calls(fresh_teacher)
    torch.manual_seed(0)
    train(build_student(TINY, 1, 10), fresh_teacher, flipping, SCHEDULE, "full", device=CPU, seed=0, teacher_cache=opened)
    assert calls == []


def test_the_same_run_from_a_built_and_an_opened_cache(flipping, tmp_path):
    built = TeacherCache(teacher(), loader_of(flipping), "full", num_classes=10)
    write_cache(built, tmp_path / "cache.pt")
    opened = open_cache(tmp_path / "cache.pt", teacher(), loader_of(flipping), MODES["full"])[0]
    runs = []
    for cache in (built, opened):
        torch.manual_seed(0)
        runs.append(train(build_student(TINY, 1, 10), cache.teacher, flipping, SCHEDULE, "full", device=CPU, seed=0, teacher_cache=cache)["history"][-1])
    assert runs[0]["losses"] == runs[1]["losses"] and runs[0]["val_accuracy"] == runs[1]["val_accuracy"]


def test_a_run_that_fills_its_own_cache_trains_as_one_handed_a_cache_filled_elsewhere(flipping, tmp_path):
    """The product's promise behind `--jobs` workers and a bench's shared file. Filling a cache
    builds the loaded attention, whose throwaway initial weights drew from torch's generator; the
    run that filled its own then initialised its adapters and discriminators from another point of
    the stream (2M brief full, seed 0: 92.17% own fill, 92.13% on the parent's file). Every
    epoch's losses are compared, not only the accuracy, which a short run may share by chance."""
    from nas_kd.distill.trainer import frozen_teacher

    # Filled by the teacher as a run sets it up (its memory layout changes the convolutions' last bits).
    write_cache(TeacherCache(frozen_teacher(teacher(), CPU), loader_of(flipping), "full", num_classes=10), tmp_path / "cache.pt")
    runs = []
    for given in (False, True):
        t = teacher()
        cache = open_cache(tmp_path / "cache.pt", t, loader_of(flipping), MODES["full"])[0] if given else None
        torch.manual_seed(0)
        m = train(build_student(TINY, 1, 10), t, flipping, SCHEDULE, "full", device=CPU, seed=0, teacher_cache=cache)
        runs.append([{k: h[k] for k in ("losses", "disc_accuracy", "val_accuracy")} for h in m["history"]])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("mode", ["full", "kd"])
def test_getting_the_teacher_ready_leaves_the_callers_random_state_as_it_was(flipping, mode):
    """`prepare_teacher` filling a cache (and fitting the attention, for modes with ``desc``) or
    opening one draws nothing from torch's generator that the run would see."""
    from nas_kd.distill.trainer import prepare_teacher

    t, loader = teacher(), loader_of(flipping)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    cache, _ = prepare_teacher(t, loader, MODES[mode], 10, teacher_cache=None, teacher_attention=None, max_cache_bytes=2**30, input_shape=(1, 16, 16), log=None)
    assert cache is not None and torch.equal(torch.get_rng_state(), before)


def test_another_teacher_other_data_or_an_uncovered_mode_is_refused_with_a_reason(flipping, tmp_path):
    path = tmp_path / "cache.pt"
    write_cache(TeacherCache(teacher(), loader_of(flipping), "ktan", num_classes=10), path)
    nudged = teacher()
    with torch.no_grad():
        next(nudged.parameters()).view(-1)[0] += 1e-3
    rebuffered = teacher()
    next(b for n, b in rebuffered.named_buffers() if n.endswith("running_mean")).add_(0.5)  # BN statistics are the teacher too
    other = load_splits("synthetic", train_subset=96, seed=1)
    other = dataclasses.replace(other, info=dataclasses.replace(other.info, flip=True))
    for t, loader in ((nudged, loader_of(flipping)), (rebuffered, loader_of(flipping)), (teacher(), loader_of(other))):
        cache, why = open_cache(path, t, loader, MODES["ktan"])
        assert cache is None and "another teacher or other training data" in why
    cache, why = open_cache(path, teacher(), loader_of(flipping), MODES["full"])  # ktan kept the deepest stage only
    assert cache is None and "lacks teacher outputs that mode 'full' reads" in why
    cache, why = open_cache(path, teacher(), loader_of(flipping, crop=True), MODES["ktan"])
    assert cache is None and "crops at random" in why
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    cache, why = open_cache(tmp_path / "junk.pt", teacher(), loader_of(flipping), MODES["ktan"])
    assert cache is None and "cannot read" in why
    cache, why = open_cache(tmp_path / "missing.pt", teacher(), loader_of(flipping), MODES["ktan"])
    assert cache is None and "cannot read" in why


def test_the_same_images_in_another_order_other_views_or_another_file_format_are_refused(flipping, tmp_path):
    """What the fingerprint must tell apart beyond the teacher: the cache is read by example index
    and view, so the same images in another order (same mean and spread) index other outputs, and
    a run without flips reads no mirrored view."""
    from nas_kd.distill import shared_cache

    path = tmp_path / "cache.pt"
    write_cache(TeacherCache(teacher(), loader_of(flipping), "kd", num_classes=10), path)
    shuffled = loader_of(flipping)
    shuffled.x = shuffled.x[torch.randperm(len(shuffled.x), generator=torch.Generator().manual_seed(0))]
    unflipped = loader_of(dataclasses.replace(flipping, info=dataclasses.replace(flipping.info, flip=False)))
    assert unflipped.views != loader_of(flipping).views
    for loader in (shuffled, unflipped):
        cache, why = open_cache(path, teacher(), loader, MODES["kd"])
        assert cache is None and "another teacher or other training data" in why
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format": shared_cache.FORMAT + 1}, path)
    cache, why = open_cache(path, teacher(), loader_of(flipping), MODES["kd"])
    assert cache is None and "is not a teacher cache of format" in why


def test_the_shared_file_lives_as_long_as_its_block_and_none_writes_nothing(flipping, tmp_path):
    cache = TeacherCache(teacher(), loader_of(flipping), "kd", num_classes=10)
    path = tmp_path / "run" / "cache.pt"
    with shared_file(cache, path) as shared:
        assert shared == path and path.is_file()
        opened = open_cache(path, teacher(), loader_of(flipping), MODES["kd"])[0]
    assert not path.exists() and list(path.parent.iterdir()) == []
    assert torch.equal(opened.logits, cache.logits)  # a worker that opened it keeps reading after the delete
    with pytest.raises(KeyboardInterrupt), shared_file(cache, path):
        raise KeyboardInterrupt
    assert not path.exists()
    with shared_file(None, path) as shared:
        assert shared is None and not path.exists()


def test_the_shared_file_does_not_keep_the_cache_alive(flipping, tmp_path):
    """A process that only shares (bench-gpu's ablation: its workers train) drops its cache once
    the file is written; the block must not hold it (on a GPU, 4.5 GiB of device memory)."""
    import gc
    import weakref

    cache = TeacherCache(teacher(), loader_of(flipping), "kd", num_classes=10)
    alive = weakref.ref(cache)
    with shared_file(cache, tmp_path / "cache.pt") as shared:
        del cache
        gc.collect()
        assert alive() is None and shared.is_file()


def test_other_normalisation_or_a_file_whose_contents_disagree_with_its_fingerprint_is_refused(flipping, tmp_path):
    """The outputs depend on the normalised images: the same uint8 images under another mean or
    spread are other inputs. A file whose recorded stages or descriptors were changed after it was
    written no longer matches its fingerprint (its maps would be looked up where none are)."""
    path = tmp_path / "cache.pt"
    write_cache(TeacherCache(teacher(), loader_of(flipping), "ktan", num_classes=10), path)
    for field in ("mean", "std"):
        cache, why = open_cache(path, teacher(), loader_of(with_shifted(flipping, field)), MODES["ktan"])
        assert cache is None and "another teacher or other training data" in why
    payload = torch.load(path, weights_only=True)
    for changed in ({"map_stages": [0, 1, 2]}, {"descriptors": [torch.zeros(1)] * 3}):
        torch.save({**payload, **changed}, path)
        cache, why = open_cache(path, teacher(), loader_of(flipping), MODES["ktan"])
        assert cache is None and "another teacher or other training data" in why


def test_a_write_that_fails_leaves_no_file_a_worker_would_open(flipping, tmp_path, monkeypatch):
    """Written aside and renamed: a failed write (here the disk filling up) never leaves half a
    file under the name workers open, nor its part on the disk."""
    path = tmp_path / "cache.pt"
    cache = TeacherCache(teacher(), loader_of(flipping), "kd", num_classes=10)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_cache(cache, path)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its half-written part
    monkeypatch.setattr(torch, "save", real_save)
    write_cache(cache, path)
    assert open_cache(path, teacher(), loader_of(flipping), MODES["kd"])[0] is not None
