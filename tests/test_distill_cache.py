"""The teacher pass paid once: loader indices and flips, the cache against the live teacher,
and `train` reusing a cache without running the teacher again."""

import pytest
import torch
from test_distill_step import TINY

from nas_kd.config import Schedule, get_preset
from nas_kd.data import load_splits
from nas_kd.device import torch_threads
from nas_kd.distill import MODES, TeacherCache, train
from nas_kd.distill.attention_fit import fit_teacher_attention, load_teacher_attention
from nas_kd.distill.map_scale import teacher_map_scales
from nas_kd.distill.outputs import teacher_outputs
from nas_kd.distill.trainer import frozen_teacher
from nas_kd.models.student import build_student
from nas_kd.models.teachers import build_teacher, resolve_teacher
from nas_kd.train import make_loaders

CPU = torch.device("cpu")
SCHEDULE = Schedule(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0, crop=False)


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", train_subset=96)


@pytest.fixture(scope="module")
def flipping(splits):
    """The same data with flips allowed (synthetic itself never flips), so there are two views."""
    import dataclasses

    return dataclasses.replace(splits, info=dataclasses.replace(splits.info, flip=True))


def teacher(recon=False):
    torch.manual_seed(0)
    t = build_teacher("resnet8", 1, 10, reconstruction=(16, 16) if recon else None).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def with_shifted(splits, field: str):
    """``splits`` with its normalisation's ``field`` ("mean" or "std") moved by 0.05: the same
    uint8 images, other inputs to the teacher."""
    import dataclasses

    return dataclasses.replace(splits, **{field: tuple(v + 0.05 for v in getattr(splits, field))})


def count_calls(module):
    calls = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_batches_say_which_examples_and_which_flips(flipping):
    loader = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0]
    assert loader.views == 2
    seen, flips = [], []
    for b in loader.batches():
        expected = loader.view(b.index, flip=False)
        expected = torch.where(b.flipped[:, None, None, None], expected.flip(3), expected)
        assert torch.equal(b.x, expected) and torch.equal(b.y, flipping.train.y[b.index])
        seen.append(b.index)
        flips.append(b.flipped)
    seen = torch.cat(seen).tolist()
    assert len(set(seen)) == len(seen) == len(flipping.train) // 32 * 32  # every example at most once (drop_last)
    flips = torch.cat(flips).float().mean().item()
    assert 0.2 < flips < 0.8
    # Plain iteration is unchanged: the same batches for the same seed.
    again = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0]
    for (x, y), b in zip(again, make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0].batches(), strict=True):
        assert torch.equal(x, b.x) and torch.equal(y, b.y)


def test_views_are_finite_only_without_random_crops(splits, flipping):
    assert make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=False)[0].views == 1
    assert make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=True)[0].views is None
    with pytest.raises(ValueError, match="crops at random"):
        TeacherCache(teacher(), make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=True)[0], "kd", num_classes=10)


@pytest.mark.parametrize("name", ["kd", "ktan", "ksanc", "zhang", "full"])
def test_cached_outputs_equal_the_live_teacher_for_the_same_example_and_flip(flipping, name):
    t = teacher(recon=name == "zhang")
    loader = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0]
    cache = TeacherCache(t, loader, name, num_classes=10)
    stages = list(range(3)) if MODES[name].weights.desc or MODES[name].stages == "all" else [2]
    map_stages = stages if MODES[name].uses_teacher_maps else []
    desc_stages = stages if MODES[name].weights.desc else []
    attention = load_teacher_attention(cache.attention_state, t, 10).subset(desc_stages) if desc_stages else None
    for i, b in enumerate(loader.batches()):
        samples = 5 if i % 2 else None  # the map terms on the batch's first images (Mode.map_samples)
        got = cache.lookup(b.index, b.flipped, map_stages, desc_stages, samples)
        want = teacher_outputs(t, b.x, map_stages, attention, desc_stages, samples)
        assert torch.allclose(got.logits, want.logits, atol=1e-5)
        assert len(got.maps) == len(want.maps) == len(map_stages)
        for g, w in zip(got.maps, want.maps, strict=True):
            assert g.shape == w.shape and torch.allclose(g, w, rtol=1e-2, atol=1e-2)  # bfloat16 storage
        assert len(got.descriptors) == len(want.descriptors) == len(desc_stages)
        for g, w in zip(got.descriptors, want.descriptors, strict=True):
            assert g.shape == w.shape and torch.allclose(g, w, atol=1e-4)
    assert cache.nbytes == TeacherCache.estimate_bytes(t, loader, MODES[name], (1, 16, 16), 10)


def test_a_cache_keeps_only_what_the_mode_reads(flipping):
    t = teacher()
    loader = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0]
    kd, ktan, full = (TeacherCache(t, loader, m, num_classes=10) for m in ("kd", "ktan", "full"))
    assert (kd.map_stages, ktan.map_stages, full.map_stages) == ((), (2,), (0, 1, 2))
    assert kd.descriptors is None and full.descriptors is not None
    assert kd.nbytes == 2 * len(flipping.train) * 10 * 4  # two views of float32 logits
    assert full.covers(MODES["ktan"]) and full.covers(MODES["ksanc"]) and not ktan.covers(MODES["full"]) and not kd.covers(MODES["ktan"])
    assert not ktan.covers(MODES["ksanc"])  # ksanc reads no maps but the descriptors, which ktan's cache lacks
    assert all(m.dtype == torch.bfloat16 for m in full.maps.values()) and full.logits.dtype == torch.float32  # maps at half of float32's memory


def test_train_reuses_a_cache_without_running_the_teacher(flipping):
    t = teacher()
    train_dl, val_dl, test_dl = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)
    cache = TeacherCache(t, train_dl, "full", num_classes=10)
    calls = count_calls(t)
    for mode in ("kd", "full"):
        torch.manual_seed(0)
        train(build_student(TINY, 1, 10), t, flipping, SCHEDULE, mode, device=CPU, seed=0, loaders=(train_dl, val_dl, test_dl), teacher_cache=cache)
    assert calls == []


def test_without_a_cache_train_builds_one_and_with_crops_runs_the_teacher_live(flipping):
    t = teacher()
    calls = count_calls(t)
    train(build_student(TINY, 1, 10), t, flipping, SCHEDULE, "kd", device=CPU, seed=0)
    assert len(calls) == 2  # one pass per view (all examples fit one build batch), none per step
    calls.clear()
    train(build_student(TINY, 1, 10), t, flipping, SCHEDULE.replace(crop=True), "kd", device=CPU, seed=0)
    assert len(calls) == SCHEDULE.epochs * (len(flipping.train) // 32)  # one per step


def test_cached_and_live_training_agree(splits):
    """kd reads float32 logits only, so the two paths give the same run."""
    runs = []
    for max_bytes in (2**30, 0):  # 0: the cache would not fit, the teacher runs live
        torch.manual_seed(0)
        runs.append(train(build_student(TINY, 1, 10), teacher(), splits, SCHEDULE, "kd", device=CPU, seed=0, max_cache_bytes=max_bytes))
    cached, live = (r["history"][-1] for r in runs)
    assert cached["val_accuracy"] == live["val_accuracy"]
    assert cached["losses"] == pytest.approx(live["losses"], rel=1e-4)


def test_a_cache_for_another_teacher_or_data_is_refused(splits, flipping):
    loaders = make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=False)
    cache = TeacherCache(teacher(), loaders[0], "kd", num_classes=10)
    with pytest.raises(ValueError, match="another teacher, training data or mode"):
        train(build_student(TINY, 1, 10), teacher(), splits, SCHEDULE, "kd", device=CPU, seed=0, loaders=loaders, teacher_cache=cache)
    with pytest.raises(ValueError, match="another teacher, training data or mode"):
        train(build_student(TINY, 1, 10), cache.teacher, flipping, SCHEDULE, "kd", device=CPU, seed=0, teacher_cache=cache)
    with pytest.raises(ValueError, match="another teacher, training data or mode"):
        train(build_student(TINY, 1, 10), cache.teacher, splits, SCHEDULE, "ktan", device=CPU, seed=0, loaders=loaders, teacher_cache=cache)


def test_teacher_attention_is_fitted_deterministically_and_is_task_driven(splits):
    t = teacher()
    loader = make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=False)[0]
    rng = torch.get_rng_state()
    a, b = fit_teacher_attention(t, loader, 10, seed=3), fit_teacher_attention(t, loader, 10, seed=3)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's random stream is untouched
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], fit_teacher_attention(t, loader, 10, seed=4)[k]) for k in a)
    fit = fit_teacher_attention(t, loader, 10, seed=3, epochs=30)  # 120 steps: what ~4,000 examples give in 3 epochs
    fitted, unfitted = load_teacher_attention(fit, t, 10), load_teacher_attention(fit_teacher_attention(t, loader, 10, epochs=0), t, 10)
    with torch.no_grad():
        x, y = loader.view(torch.arange(len(splits.train)), flip=False), splits.train.y
        maps, _ = t.forward_stages(x)
        assert fitted.task_loss(fitted.squeeze(maps), y) < 0.8 * unfitted.task_loss(unfitted.squeeze(maps), y)


def test_the_attention_does_not_move_during_distillation_and_is_shared_by_both_sides(splits):
    """The L_is target is fixed (KSANC's descriptor target must not drift), and the student's
    descriptors come from the same frozen squeeze: the teacher's own maps would score zero."""
    t = teacher()
    loaders = make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=True)  # live path
    state = fit_teacher_attention(t, loaders[0], 10)
    from nas_kd.distill.adapters import Adapted
    from nas_kd.distill.trainer import build_step

    step = build_step(build_student(TINY, 1, 10), t, MODES["ksanc"], SCHEDULE, input_shape=(1, 16, 16), num_classes=10, steps_per_epoch=3, device=CPU, teacher_attention=state)
    frozen = {k: v.clone() for k, v in step.objective.attention.state_dict().items()}
    assert not any(p.requires_grad for p in step.objective.attention.parameters())
    for b in loaders[0].batches():
        step(b.x, b.y, index=b.index, flipped=b.flipped)
    assert all(torch.equal(frozen[k], v) for k, v in step.objective.attention.state_dict().items())
    b = next(loaders[0].batches())
    out = step.teacher_outputs(b.x, b.index, b.flipped)
    with torch.no_grad():
        maps, _ = t.forward_stages(b.x)
    parts = step.objective.student_losses(out.logits, Adapted(maps, maps[-1]), out, b.y, b.x, adversarial=False)
    assert parts["desc"].item() < 1e-10


def test_a_cache_built_from_a_teacher_in_training_mode_holds_its_eval_outputs_and_leaves_its_statistics(flipping):
    """The teacher is frozen: its batch norms use their running statistics while the cache is
    filled, and the fill changes none of them."""
    t = teacher()
    loader = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0]
    x = loader.view(torch.arange(8), flip=False)
    with torch.no_grad():
        want = t(x)
    stats = {k: v.clone() for k, v in t.state_dict().items()}
    cache = TeacherCache(t.train(), loader, "kd", num_classes=10)
    assert all(torch.equal(stats[k], v) for k, v in t.state_dict().items())
    assert torch.allclose(cache.lookup(torch.arange(8), torch.zeros(8, dtype=torch.bool), [], []).logits, want, atol=1e-5)


def test_a_given_attention_is_used_not_fitted_again(flipping, monkeypatch):
    import nas_kd.distill.cache as cache_module

    t = teacher()
    loader = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0]
    state = fit_teacher_attention(t, loader, 10, seed=5)

    def refit(*_, **__):
        raise AssertionError("the attention was fitted again")

    monkeypatch.setattr(cache_module, "fit_teacher_attention", refit)
    cache = TeacherCache(t, loader, "full", num_classes=10, attention_state=state)
    assert cache.attention_state is state


def test_descriptors_of_a_subset_of_stages_are_those_stages(flipping):
    """An attention over the deeper stages only looks up those stages' descriptors, as the live
    teacher computes them."""
    t = teacher()
    loader = make_loaders(flipping, batch_size=32, device=CPU, seed=0, crop=False)[0]
    cache = TeacherCache(t, loader, "full", num_classes=10)
    attention = load_teacher_attention(cache.attention_state, t, 10)
    for stages in ([1, 2], [2], [0, 2]):
        b = next(loader.batches())
        got = cache.lookup(b.index, b.flipped, [], stages)
        want = teacher_outputs(t, b.x, [], attention.subset(stages), stages, None)
        assert len(got.descriptors) == len(stages)
        for g, w in zip(got.descriptors, want.descriptors, strict=True):
            assert g.shape == w.shape and torch.allclose(g, w, atol=1e-4)


def test_a_cache_matches_only_the_same_images_and_normalisation(splits):
    import dataclasses

    from nas_kd.data.splits import Split

    t = teacher()
    loader = make_loaders(splits, batch_size=32, device=CPU, seed=0, crop=False)[0]
    cache = TeacherCache(t, loader, "kd", num_classes=10)
    copied = dataclasses.replace(splits, train=Split(splits.train.x.clone(), splits.train.y))
    assert cache.matches(t, make_loaders(copied, batch_size=32, device=CPU, seed=1, crop=False)[0])  # equal images, another tensor and order
    other = dataclasses.replace(splits, train=Split(255 - splits.train.x, splits.train.y))
    assert not cache.matches(t, make_loaders(other, batch_size=32, device=CPU, seed=0, crop=False)[0])
    for field in ("mean", "std"):
        assert not cache.matches(t, make_loaders(with_shifted(splits, field), batch_size=32, device=CPU, seed=0, crop=False)[0])


def test_what_a_cache_holds_is_the_same_on_any_number_of_threads(splits):
    """A bench or a search fills a teacher cache with every core and trains runs on one thread
    each: the map scales, the fitted attention and the descriptors must not depend on the thread
    count (on two threads a float32 reduction rounds differently: the shipped teacher's first map
    scale moved by one ulp and the attention by 2e-3)."""
    t = teacher()
    filled = {}
    for threads in (1, 2):
        with torch_threads(threads):
            loader = make_loaders(splits, batch_size=96, device=CPU, seed=0, crop=False)[0]  # batches big enough to split
            filled[threads] = (teacher_map_scales(t, loader), TeacherCache(t, loader, "full", num_classes=10))
    (scales1, one), (scales2, two) = filled[1], filled[2]
    assert scales1 == scales2
    assert all(torch.equal(one.attention_state[k], two.attention_state[k]) for k in one.attention_state)
    assert all(torch.equal(a, b) for a, b in zip(one.descriptors, two.descriptors, strict=True))
    assert torch.equal(one.logits, two.logits)


def test_on_real_data_the_cache_is_the_same_on_one_thread_and_two():
    """The same on Fashion-MNIST and the shipped teacher, whose maps are large enough that two
    threads split the fit's reductions: without `one_thread` the attention differed here."""
    try:
        real = load_splits("fashion-mnist", None, seed=0, train_subset=1024)
    except Exception as e:  # noqa: BLE001 (any reason the real files are missing)
        pytest.skip(f"no Fashion-MNIST here: {e}")
    standard = get_preset("standard")
    t = frozen_teacher(resolve_teacher("default", "fashion-mnist", standard.teacher, preset=standard.name, device=CPU, reconstruction=True)[0], CPU)
    filled = {}
    for threads in (1, 2):
        with torch_threads(threads):
            loader = make_loaders(real, batch_size=256, device=CPU, seed=0, crop=False)[0]
            scales = teacher_map_scales(t, loader)
            attention = fit_teacher_attention(t, loader, 10, epochs=1)
            filled[threads] = (scales, attention, TeacherCache(t, loader, "full", num_classes=10, attention_state=attention))
    (scales1, fit1, one), (scales2, fit2, two) = filled[1], filled[2]
    assert scales1 == scales2
    assert all(torch.equal(fit1[k], fit2[k]) for k in fit1)
    assert all(torch.equal(a, b) for a, b in zip(one.descriptors, two.descriptors, strict=True))


class _FixedMaps(torch.nn.Module):
    """A 'teacher' whose stage maps are fixed random tensors: large enough (512 images of
    16x28x28) that two threads split a float32 sum over them, and in the channels-last layout, in
    which the split rounds differently (this contiguous tensor's sum happened not to)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.maps = [torch.randn(512, 16, 28, 28, generator=g) * (1 + torch.rand(512, 1, 1, 1, generator=g)) for _ in range(3)]

    def forward_stages(self, x):
        return [m[: len(x)].contiguous(memory_format=torch.channels_last) for m in self.maps], None


def test_map_scales_are_the_same_on_one_thread_and_two():
    t = _FixedMaps()
    loader = make_loaders(load_splits("synthetic:1x28x28:10", train_subset=600), batch_size=64, device=CPU, seed=0, crop=False)[0]
    measured = []
    for threads in (1, 2):
        with torch_threads(threads):
            measured.append(teacher_map_scales(t, loader))
        t = _FixedMaps()  # a new teacher: the scales are remembered per teacher and loader
    assert measured[0] == measured[1]
