import dataclasses
import os
import pickle

import pytest
import torch
from torch import nn

from nas_kd.config import Schedule
from nas_kd.data import dataset_info
from nas_kd.device import resolve_device
from nas_kd.errors import UserError
from nas_kd.models import teachers as T

CPU = torch.device("cpu")
TINY = Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=256)


@pytest.mark.parametrize("arch", ["resnet8", "resnet20", "resnet20x2", "wrn-10-2", "wrn16-1"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28)])
def test_registry_teachers_share_the_stage_interface(arch, shape):
    net = T.build_teacher(arch, shape[0], 7)
    x = torch.randn(2, *shape)
    maps, logits = net.forward_stages(x)
    assert [m.shape[1] for m in maps] == list(net.stage_channels)
    assert logits.shape == (2, 7) and torch.allclose(net(x), logits)
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("bad", ["resnet21", "wrn-15-4", "vgg16", "", "resnet20x0"])
def test_bad_arch_names(bad):
    with pytest.raises(UserError):
        T.parse_arch(bad)


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("size", [(30, 30), (28, 28), (7, 9)])
def test_reconstruction_decoder_restores_input_size(version, size):
    net = T.build_teacher("resnet8", 3, 10, reconstruction=size, decoder_version=version)
    maps, _ = net.forward_stages(torch.randn(2, 3, *size))
    assert net.decoder(maps[-1]).shape == (2, 3, *size)


def test_reconstruction_decoder_costs_less_than_a_third_of_resnet20():
    """Version 1 convolved at twice the input size and made a teacher step 2.4x slower."""
    net = T.build_teacher("resnet20", 1, 10, reconstruction=(28, 28)).eval()
    macs = {}

    def count(conv, _, out):  # convolutions are nearly all of both networks' MACs
        macs[conv] = out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(count)
    maps, _ = net.forward_stages(torch.randn(1, 1, 28, 28))
    net.decoder(maps[-1])
    decoder = sum(n for conv, n in macs.items() if any(conv is m for m in net.decoder.modules()))
    assert 0 < decoder < (sum(macs.values()) - decoder) / 3, (decoder, sum(macs.values()))


def _fit_decoder(version: int, seed: int, lr: float = 0.05, steps: int = 40) -> list[float]:
    """The reconstruction loss per step while a decoder alone fits a wide teacher's deepest maps
    (256 channels of ReLU outputs, wrn-16-4's) by SGD with Nesterov momentum 0.9, as a teacher
    trains; it stops at the first loss over 1e4."""
    torch.manual_seed(seed)
    decoder = T.build_teacher("wrn-16-4", 1, 10, reconstruction=(28, 28), decoder_version=version).decoder
    opt = torch.optim.SGD(decoder.parameters(), lr=lr, momentum=0.9, nesterov=True)
    maps, images, losses = torch.relu(torch.randn(64, 256, 7, 7)), torch.randn(64, 1, 28, 28), []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(decoder(maps), images)
        losses.append(loss.item() if torch.isfinite(loss) else float("inf"))
        if losses[-1] > 1e4:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def test_a_wide_teachers_decoder_trains_at_the_presets_rate():
    """Version 2's decoder ended in a quarter of the teacher's deepest channels (64 for wrn-16-4),
    and the loss's curvature grows with that width: at the quick preset's lr 0.05 it blew up (as
    wrn-16-4 teachers did on short warm-ups); version 3 caps the widths at resnet20's."""
    assert all(max(_fit_decoder(2, seed)) > 1e3 for seed in (0, 1))  # what the cap prevents
    for seed in (0, 1, 2):
        losses = _fit_decoder(3, seed)
        assert len(losses) == 40 and max(losses) < 100 and losses[-1] < 1.5, losses


def test_the_capped_decoder_is_the_old_one_for_resnet20():
    """The shipped resnet20 teacher's decoder (version 2) has the widths version 3 builds."""
    shapes = [[tuple(p.shape) for p in T.build_teacher("resnet20", 1, 10, reconstruction=(28, 28), decoder_version=v).decoder.parameters()] for v in (2, 3)]
    assert shapes[0] == shapes[1]


def test_teachers_saved_with_the_first_decoder_still_load(tmp_path):
    info = dataset_info("synthetic")
    old = T.build_teacher("resnet8", info.channels, info.num_classes, reconstruction=(info.height, info.width), decoder_version=1)
    meta = {"dataset": info.name, "num_classes": info.num_classes, "input_shape": list(info.input_shape), "arch": "resnet8", "reconstruction": True}
    path = T.save_teacher(tmp_path / "v1.pt", old.eval(), meta)  # no decoder_version: written before it existed
    loaded, _ = T.load_teacher(path, info)
    x = torch.randn(2, *info.input_shape)
    with torch.no_grad():  # the loaded one runs channels_last: the same up to float rounding
        assert torch.allclose(loaded.decoder(loaded.forward_stages(x)[0][-1]), old.decoder(old.forward_stages(x)[0][-1]), atol=1e-5)
    with pytest.raises(UserError, match="decoder version 9"):
        T.load_teacher(T.save_teacher(tmp_path / "v9.pt", old, {**meta, "decoder_version": 9}), info)


def test_train_save_load_and_reuse(tmp_path, monkeypatch):
    kw = dict(preset="quick", seed=0, device=CPU, root=tmp_path, log=lambda *_: None)
    model, meta, path = T.ensure_teacher("synthetic", "resnet8", TINY, reconstruction=True, **kw)
    assert path.is_file() and meta["reconstruction"] and meta["arch"] == "resnet8" and meta["decoder_version"] == 3
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # atomic write left no temp file

    def must_not_train(*a, **k):
        raise AssertionError("a cached teacher was trained again")

    monkeypatch.setattr(T, "train_teacher", must_not_train)
    again, meta2, path2 = T.ensure_teacher("synthetic", "resnet8", TINY, reconstruction=True, **kw)
    assert path2 == path and meta2["test_accuracy"] == meta["test_accuracy"]
    x = torch.randn(4, 1, 16, 16)
    assert torch.equal(model(x), again(x))
    assert not any(p.requires_grad for p in again.parameters()) and not again.training


def test_key_changes_with_recipe_and_seed():
    a = T.teacher_key("synthetic", "resnet8", TINY, 0, False)
    assert a != T.teacher_key("synthetic", "resnet8", TINY.replace(epochs=2), 0, False)
    assert a != T.teacher_key("synthetic", "resnet8", TINY, 1, False)
    assert a.startswith("synthetic_resnet8_s0_")


def _saved(tmp_path, dataset="synthetic", name="t.pt", **meta_changes):
    """A resnet8 for ``dataset`` saved as ``name``, its metadata changed by ``meta_changes``."""
    info = dataset_info(dataset)
    net = T.build_teacher("resnet8", info.channels, info.num_classes)
    meta = {"dataset": info.name, "num_classes": info.num_classes, "input_shape": list(info.input_shape), "arch": "resnet8", "reconstruction": False}
    return T.save_teacher(tmp_path / name, net, {**meta, **meta_changes})


def test_teacher_for_wrong_class_count_is_refused(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(UserError) as e:
        T.load_teacher(path, dataset_info("synthetic:1x16x16:5"))
    assert str(e.value) == (
        f"teacher '{path}' was trained on 'synthetic' (10 classes, input (1, 16, 16)) but the data is "
        "'synthetic:1x16x16:5' (5 classes, input (1, 16, 16)): train a teacher for it with 'nas-kd teacher --dataset synthetic:1x16x16:5'"
    )


@pytest.mark.parametrize("field, value", [("dataset", "synthetic:1x16x16:10"), ("num_classes", 5), ("input_shape", [1, 8, 8])])
def test_a_teacher_that_differs_from_the_data_in_one_respect_is_refused(tmp_path, field, value):
    """Name, class count and input shape are each checked: a teacher recorded as made for other
    data in any one of them is refused, whatever the other two say."""
    info = dataset_info("synthetic")
    with pytest.raises(UserError, match="was trained on .* but the data is 'synthetic'"):
        T.load_teacher(_saved(tmp_path, **{field: value}), info)
    T.load_teacher(_saved(tmp_path, name="same.pt"), info)  # the same in all three: loads


def test_a_verified_load_needs_the_very_file(tmp_path):
    from nas_kd.files import digest

    path = _saved(tmp_path)
    sha = digest(path)
    assert T.load_verified(path, sha, dataset_info("synthetic")) is not None
    assert T.load_verified(path, "0" * 64, dataset_info("synthetic")) is None  # retrained or replaced since
    assert T.load_verified(tmp_path / "gone.pt", sha, dataset_info("synthetic")) is None


@pytest.mark.parametrize("spec, is_path", [("resnet20", False), ("wrn-16-4", False), ("teacher.pt", True), ("t.ts", True), ("old.pth", True), ("runs/t", True), ("runs\\t", True)])
def test_a_spec_spelt_like_a_file_is_a_path_even_before_it_exists(spec, is_path):
    """So a mistyped file name is refused as a missing file, not trained as an architecture."""
    assert T.is_teacher_path(spec) is is_path


def test_pickle_that_runs_code_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format": T.CHECKPOINT_FORMAT, "x": Evil()}, f)
    torch.save({"format": T.CHECKPOINT_FORMAT, "x": Evil()}, tmp_path / "evil_zip.pt")
    for p in (bad, tmp_path / "evil_zip.pt"):
        with pytest.raises(UserError, match="refusing to load .* it is not a weights-only nas-kd checkpoint"):
            T.load_teacher(p, dataset_info("synthetic"))
    assert not marker.exists()


def test_non_teacher_files_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not a weights-only"):
        T.load_teacher(junk, dataset_info("synthetic"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="is not a nas-kd teacher checkpoint"):
        T.load_teacher(tmp_path / "other.pt", dataset_info("synthetic"))
    with pytest.raises(UserError, match="does not exist"):
        T.load_teacher(tmp_path / "missing.pt", dataset_info("synthetic"))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, 2, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))

    @torch.jit.export
    def forward_stages(self, x: torch.Tensor):
        h = self.conv(x)
        return [h], self.fc(h.mean((2, 3)))


def test_torchscript_teacher_with_and_without_stages(tmp_path):
    p = tmp_path / "t.ts"
    torch.jit.save(torch.jit.script(_Tiny()), p)
    model, meta = T.load_teacher(p, dataset_info("synthetic"))
    assert model.stage_channels == (8,) and meta["arch"] == "torchscript:t.ts"
    maps, logits = model.forward_stages(torch.zeros(3, 1, 16, 16))
    assert logits.shape == (3, 10)
    traced = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.trace(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), torch.zeros(1, 1, 16, 16)), traced)
    plain, _ = T.load_teacher(traced, dataset_info("synthetic"))
    with pytest.raises(UserError, match="exposes no stage feature maps"):
        plain.forward_stages(torch.zeros(1, 1, 16, 16))
    with pytest.raises(UserError, match="returns logits of shape"):
        T.load_teacher(traced, dataset_info("synthetic:1x16x16:5"))


def test_teacher_cli_trains_then_reuses(cli, in_tmp):
    args = ("teacher", "--dataset", "synthetic", "--arch", "resnet8", "--epochs", "1", "--train-subset", "200", "--device", "cpu")
    code, out, _ = cli(*args)
    assert code == 0 and "runs/teachers/synthetic_resnet8_s0_" in out
    code, out2, _ = cli(*args)
    assert code == 0 and out2.splitlines()[-1] == out.splitlines()[-1]
    assert "reusing" in out2


def test_teacher_cli_bad_input(cli, in_tmp):
    code, _, err = cli("teacher", "--dataset", "synthetic", "--arch", "resnet21")
    assert code == 2 and err.startswith("nas-kd: error: invalid teacher 'resnet21'")
    code, _, err = cli("teacher", "--dataset", "synthetic", "--epochs", "0")
    assert code == 2 and err == "nas-kd: error: epochs must be at least 1, got 0: pass --epochs 1 or more\n"
    assert not (in_tmp / "runs").exists()


def test_cuda_without_gpu_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_a_teacher_near_chance_is_saved_with_a_warning(tmp_path):
    lines: list[str] = []
    kw = dict(preset="quick", seed=0, device=CPU, root=tmp_path, log=lines.append)
    _, meta, path = T.ensure_teacher("synthetic", "resnet8", TINY.replace(lr=1e4), **kw)  # BN keeps the loss finite; nothing is learned
    assert path.is_file() and meta["val_accuracy"] < 0.15
    assert any(line.startswith("teacher: warning: validation accuracy") and "--lr 1000" in line for line in lines), lines
    lines.clear()
    learns = Schedule(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.0, train_subset=512)  # TINY stays near chance
    _, meta, _ = T.ensure_teacher("synthetic", "resnet8", learns, **{**kw, "root": tmp_path / "good"})
    assert meta["val_accuracy"] > 0.15 and not any("warning" in line for line in lines), (meta["val_accuracy"], lines)


def test_the_suggested_command_trains_the_same_teacher_at_the_new_rate():
    """The fields that differ from the preset's recipe, the seed and the reconstruction head are
    spelt out; a recipe of no known preset has every field spelt out."""
    from nas_kd.config import get_preset

    quick = get_preset("quick").teacher
    assert T._teacher_options("synthetic", "resnet8", quick, "quick", 0, False, lr=0.025) == "--dataset synthetic --preset quick --arch resnet8 --lr 0.025"
    changed = dataclasses.replace(quick, epochs=5, batch_size=32, train_subset=None)  # the whole training set
    assert T._teacher_options("fashion-mnist", "resnet20", changed, "quick", 3, True, lr=0.01) == (
        "--dataset fashion-mnist --preset quick --arch resnet20 --lr 0.01 --epochs 5 --batch-size 32 --train-subset 0 --seed 3 --reconstruction"
    )
    assert T._teacher_options("synthetic", "resnet8", quick, "mine", 0, False, lr=0.1) == "--dataset synthetic --arch resnet8 --lr 0.1 --epochs 2 --batch-size 64 --train-subset 24000"


def test_a_teacher_is_a_function_of_its_key_not_of_earlier_draws(tmp_path):
    """The same dataset, architecture, recipe and seed give the same teacher whatever the random
    generator drew before (a search trains its teacher after other draws); another seed another."""
    kw = dict(preset="quick", device=CPU, log=lambda *_: None)
    got = []
    for before, seed in ((1, 0), (2, 0), (1, 1)):
        torch.manual_seed(before)
        torch.rand(before)
        model, _, _ = T.ensure_teacher("synthetic", "resnet8", TINY, seed=seed, root=tmp_path / f"{before}-{seed}", **kw)
        got.append(dict(model.named_parameters()))
    assert all(torch.equal(got[0][k], got[1][k]) for k in got[0])
    assert any(not torch.equal(got[0][k], got[2][k]) for k in got[0])
