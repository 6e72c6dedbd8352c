"""Shipped teachers: found by dataset, verified by hash, refused when the bytes differ."""

import json

import pytest
import torch

import nas_kd.models.shipped as shipped
from nas_kd.config import Schedule
from nas_kd.errors import UserError
from nas_kd.files import digest
from nas_kd.models.teachers import ensure_teacher, resolve_teacher

TINY = Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=256)
CPU = torch.device("cpu")


def ship(tmp_path, monkeypatch, checkpoint):
    """A manifest in a temporary folder, as scripts/ship_teacher.py writes it."""
    from scripts.ship_teacher import main

    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "shipped")
    assert main([str(checkpoint), "--command", "nas-kd teacher --dataset synthetic", "--min-accuracy", "0"]) == 0
    return shipped.shipped_teacher("synthetic")


def test_default_is_the_shipped_teacher_and_its_split_seed(in_tmp, monkeypatch):
    _, meta, path = ensure_teacher("synthetic", "resnet8", TINY, preset="test", seed=3, device=CPU, log=lambda *_: None)
    entry = ship(in_tmp, monkeypatch, path)
    assert entry.seed == 3 and entry.sha256 == digest(path) and entry.command.startswith("nas-kd teacher")
    lines = []
    model, got, where = resolve_teacher("default", "synthetic", TINY, preset="test", device=CPU, log=lines.append)
    assert where == entry.path and got["seed"] == 3 and "shipped resnet8" in lines[0]
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(model(x), resolve_teacher(str(path), "synthetic", TINY, preset="test", device=CPU)[0](x))


def test_a_shipped_file_that_differs_from_its_manifest_is_refused(in_tmp, monkeypatch):
    _, _, path = ensure_teacher("synthetic", "resnet8", TINY, preset="test", device=CPU, log=lambda *_: None)
    entry = ship(in_tmp, monkeypatch, path)
    data = bytearray(entry.path.read_bytes())
    data[-100] ^= 1
    entry.path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its manifest"):
        resolve_teacher("default", "synthetic", TINY, preset="test", device=CPU)
    entry.path.unlink()  # a package installed without its checkpoint: one line, not a traceback
    with pytest.raises(UserError, match="the shipped teacher .* is missing: reinstall nas-kd"):
        resolve_teacher("default", "synthetic", TINY, preset="test", device=CPU)


def test_the_manifest_names_the_device_the_teacher_trained_on(in_tmp, monkeypatch):
    """A teacher trained on the lent GPU and shipped here must not be recorded as this CPU's: its
    checkpoint names its device, and the manifest takes that unless --hardware says otherwise."""
    from nas_kd.device import device_name
    from scripts.ship_teacher import main

    _, meta, path = ensure_teacher("synthetic", "resnet8", TINY, preset="test", device=CPU, log=lambda *_: None)
    assert meta["trained_on"] == device_name(CPU) and f"torch threads {torch.get_num_threads()}" in meta["trained_on"]
    def manifest():
        return json.loads((in_tmp / "shipped" / "manifest.json").read_text())["teachers"]["synthetic"]["hardware"]
    ckpt = torch.load(path, weights_only=True)
    ckpt["meta"]["trained_on"] = "NVIDIA H100 80GB HBM3"  # as the GPU machine's file says
    torch.save(ckpt, path)
    ship(in_tmp, monkeypatch, path)
    assert manifest() == "NVIDIA H100 80GB HBM3"
    assert main([str(path), "--command", "c", "--min-accuracy", "0", "--hardware", "one H100, make bench-gpu"]) == 0
    assert manifest() == "one H100, make bench-gpu"
    del ckpt["meta"]["trained_on"]  # a checkpoint from before checkpoints named their device
    torch.save(ckpt, path)
    assert main([str(path), "--command", "c", "--min-accuracy", "0"]) == 0
    assert manifest() == device_name(CPU)


def test_without_a_shipped_teacher_default_trains_resnet20_here(in_tmp, monkeypatch):
    monkeypatch.setattr(shipped, "SHIPPED_DIR", in_tmp / "nothing")
    seen = []
    monkeypatch.setattr("nas_kd.models.teachers.ensure_teacher", lambda dataset, arch, *a, **kw: seen.append(arch) or ("m", {}, "p"))
    lines = []
    resolve_teacher("default", "synthetic", TINY, preset="test", device=CPU, log=lines.append)
    assert seen == ["resnet20"] and "no teacher ships for synthetic" in lines[0]


def test_the_packaged_manifest_matches_its_files():
    """Whatever ships in nas_kd/shipped/ is what the manifest says, byte for byte."""
    manifest = shipped.SHIPPED_DIR / "manifest.json"
    if not manifest.is_file():
        pytest.skip("no teacher ships yet")
    for entry in json.loads(manifest.read_text())["teachers"].values():
        assert digest(shipped.SHIPPED_DIR / entry["file"]) == entry["sha256"]
        assert entry["test_accuracy"] >= 0.935 and entry["reconstruction"]
