"""Export formats agree with the PyTorch model; arch.json + student.pt rebuild it alone."""

import json

import pytest
import torch

from nas_kd.errors import UserError
from nas_kd.export import PARITY_TOLERANCE, export_student, load_exported, varied_batch
from nas_kd.models.student import build_student
from nas_kd.space import SearchSpace

SHAPE = (3, 12, 12)


def randomised_student():
    """A student with BN statistics estimated on data and random BN affine parameters: freshly
    initialised, it maps every input to nearly the same logits, which would make parity vacuous."""
    space = SearchSpace.from_dict({"block": "inverted_residual", "stem": {"width": 8}, "stages": [{"stride": 2, "depth": 2, "width": 16, "expand": 3, "se": True}, {"stride": 2, "depth": 1, "width": 24, "kernel": 5, "expand": 6}]})
    cfg = space.smallest()
    model = build_student(cfg, SHAPE[0], 7)
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.momentum = None  # cumulative average over the calibration batches
            bn.weight.copy_(1 + 0.3 * torch.randn(bn.weight.shape, generator=g))
            bn.bias.copy_(0.3 * torch.randn(bn.bias.shape, generator=g))
        model.train()
        for _ in range(4):
            model(varied_batch(16, SHAPE, g))
    return cfg, model.eval()


def test_every_format_matches_and_rebuilds(tmp_path):
    cfg, model = randomised_student()
    arch = {"student": cfg.to_dict(), "in_channels": 3, "input_shape": list(SHAPE), "num_classes": 7, "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    record = export_student(model, arch, tmp_path)
    parity = record["max_abs_diff"]
    assert set(parity) == {"state_dict", "torchscript", "onnx"}
    assert all(isinstance(v, float) and v < PARITY_TOLERANCE for v in parity.values())
    assert json.loads((tmp_path / "parity.json").read_text()) == record
    x = varied_batch(9, SHAPE, torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
        assert expected.std(0).max() > 0.05  # the logits depend on the input: the check means something
        rebuilt, got_arch = load_exported(tmp_path)
        assert got_arch["normalisation"] == arch["normalisation"]
        assert torch.allclose(rebuilt(x), expected, atol=PARITY_TOLERANCE)
        assert torch.allclose(torch.jit.load(str(tmp_path / "student.ts"))(x), expected, atol=PARITY_TOLERANCE)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})  # a batch size it was not traced with
    assert abs(logits - expected.numpy()).max() < PARITY_TOLERANCE
    # weights only: the state dict file loads under the safe unpickler
    assert isinstance(torch.load(tmp_path / "student.pt", weights_only=True), dict)


def test_a_disagreeing_format_is_refused(tmp_path, monkeypatch):
    import nas_kd.export as E

    cfg, model = randomised_student()
    monkeypatch.setattr(E, "_max_diff", lambda a, b: 1.0)
    with pytest.raises(RuntimeError, match="disagree"):
        export_student(model, {"student": cfg.to_dict(), "in_channels": 3, "input_shape": list(SHAPE), "num_classes": 7}, tmp_path)


def test_load_exported_refuses_what_is_not_an_export(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_exported(tmp_path)
    (tmp_path / "arch.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="not a nas-kd student export"):
        load_exported(tmp_path)
