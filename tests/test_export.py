"""Export formats agree with the PyTorch model; arch.json + student.pt rebuild it alone; the
TorchScript and ONNX graphs take raw uint8 pixels and normalise inside."""

import json
import zipfile

import numpy as np
import pytest
import torch

from nas_kd.data import DeviceLoader, Split
from nas_kd.errors import UserError
from nas_kd.export import (
    MIN_AGREEMENT,
    PARITY_TOLERANCE,
    class_names,
    export_student,
    load_exported,
    random_pixels,
    varied_batch,
)
from nas_kd.models.student import build_student
from nas_kd.space import SearchSpace

SHAPE = (3, 12, 12)
# Different per channel, so a normalisation that mixed channels up would show.
NORM = {"mean": [0.2, 0.5, 0.7], "std": [0.1, 0.25, 0.4]}


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
            bn.weight.copy_(1 + 0.3 * torch.randn(bn.weight.shape, generator=g))
            bn.bias.copy_(0.3 * torch.randn(bn.bias.shape, generator=g))
        model.train()
        for k in range(4):
            for bn in bns:  # a cumulative average over the calibration batches (students keep no batch counter)
                bn.momentum = 1 / (k + 1)
            model(varied_batch(16, SHAPE, g))
    return cfg, model.eval()


def arch_of(cfg, **extra):
    return {"student": cfg.to_dict(), "in_channels": 3, "input_shape": list(SHAPE), "num_classes": 7, "normalisation": NORM, **extra}


def normalised(pixels, norm=NORM):
    """What the training and evaluation loaders feed the student for these raw pixels."""
    loader = DeviceLoader(Split(pixels, torch.zeros(len(pixels), dtype=torch.long)), batch_size=len(pixels), device="cpu", mean=norm["mean"], std=norm["std"], train=False)
    return next(iter(loader))[0]


def test_every_format_matches_and_rebuilds(tmp_path):
    cfg, model = randomised_student()
    names = [f"class {k}" for k in range(7)]
    arch = arch_of(cfg, class_names=names)
    record = export_student(model, arch, tmp_path)  # no images: random pixel images
    assert record["images"] == 64 and "random" in record["images_source"]
    assert set(record["max_abs_diff"]) == set(record["agreement"]) == {"state_dict", "torchscript", "onnx"}
    assert all(isinstance(v, float) and v < PARITY_TOLERANCE for v in record["max_abs_diff"].values())
    assert all(v >= MIN_AGREEMENT for v in record["agreement"].values())
    assert json.loads((tmp_path / "parity.json").read_text()) == record

    pixels = random_pixels(9, SHAPE, torch.Generator().manual_seed(2))  # a batch size it was not traced with
    with torch.no_grad():
        expected = model(normalised(pixels))
        assert expected.std(0).max() > 0.05  # the logits depend on the input: the check means something
        rebuilt, got_arch = load_exported(tmp_path)
        assert got_arch["normalisation"] == NORM
        assert torch.allclose(rebuilt(normalised(pixels)), expected, atol=PARITY_TOLERANCE)
        assert torch.allclose(torch.jit.load(str(tmp_path / "student.ts"))(pixels), expected, atol=PARITY_TOLERANCE)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": pixels.numpy()})
    assert abs(logits - expected.numpy()).max() < PARITY_TOLERANCE
    # weights only: the state dict file loads under the safe unpickler
    assert isinstance(torch.load(tmp_path / "student.pt", weights_only=True), dict)


def test_the_input_contract_is_written_where_the_graphs_go(tmp_path):
    cfg, model = randomised_student()
    export_student(model, arch_of(cfg, class_names=list("abcdefg")), tmp_path)
    contract = json.loads((tmp_path / "arch.json").read_text())["exported_input"]
    assert contract["dtype"] == "uint8" and contract["layout"] == "NCHW" and contract["range"] == [0, 255]
    assert contract["shape"] == ["N", *SHAPE] and contract["name"] == "input"
    assert (contract["mean"], contract["std"]) == (NORM["mean"], NORM["std"])
    assert contract["class_names"] == list("abcdefg") and contract["output"]["shape"] == ["N", 7]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["nas_kd_input"]) == contract
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == list(SHAPE)
    with zipfile.ZipFile(tmp_path / "student.ts") as z:
        (member,) = [n for n in z.namelist() if n.endswith("extra/nas_kd_input.json")]
        assert json.loads(z.read(member)) == contract
    # class names: given ones win, else the dataset's where known
    assert class_names({"dataset": "Fashion-MNIST"})[9] == "Ankle boot" and class_names({"dataset": "cifar10"})[0] == "airplane"
    assert class_names({"dataset": "synthetic"}) is None and class_names({"dataset": "mnist", "class_names": ["x"]}) == ["x"]


def test_the_graphs_refuse_anything_but_uint8_pixels(tmp_path):
    """A float image (0..1 or 0..255) fed by mistake fails loudly instead of being misclassified."""
    cfg, model = randomised_student()
    export_student(model, arch_of(cfg), tmp_path)
    floats = random_pixels(3, SHAPE, torch.Generator().manual_seed(3)).float() / 255
    with pytest.raises(torch.jit.Error, match="takes raw pixels as uint8"):
        torch.jit.load(str(tmp_path / "student.ts"))(floats)
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(InvalidArgument, match=r"expected: \(tensor\(uint8\)\)"):
        session.run(None, {"input": floats.numpy()})
    # the right dtype in the wrong layout (N x H x W x C) is refused too, not reinterpreted
    with pytest.raises(InvalidArgument, match="invalid dimensions"):
        session.run(None, {"input": np.ascontiguousarray((floats * 255).to(torch.uint8).numpy().transpose(0, 2, 3, 1))})


def test_a_format_that_disagrees_is_refused(tmp_path):
    """A forward with data-dependent Python control flow, which tracing freezes: the exported
    graphs and the rebuilt student miss the branch that bright images take in eager mode."""
    cfg, model = randomised_student()
    model.register_forward_hook(lambda module, inputs, output: -output if bool(inputs[0].mean() > 0) else output)
    pixels = random_pixels(32, SHAPE, torch.Generator().manual_seed(4))
    dark = normalised(pixels).mean((1, 2, 3)) < 0
    images = torch.cat([pixels[dark][:2], pixels[~dark]])  # traced on the first two: dark ones
    assert len(images) > 10
    with pytest.warns(torch.jit.TracerWarning), pytest.raises(RuntimeError, match=r"disagree .* on \d+ images: state_dict \(agreement 0\.\d+"):
        export_student(model, arch_of(cfg), tmp_path, images)
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert all(v < MIN_AGREEMENT for v in parity["agreement"].values())


@pytest.mark.parametrize("case", ["shift", "tie"])
def test_each_parity_criterion_refuses_on_its_own(tmp_path, case):
    """A forward hook is traced into the graphs but not saved in the state dict, so only the
    rebuilt student misses it. ``shift``: every logit moves by 1e-3, no class changes: only the
    logit difference catches it. ``tie``: two classes tied at the top, nudged apart by 5e-5 (under
    the tolerance): only the class agreement catches it."""
    cfg, model = randomised_student()
    nudge = torch.zeros(7)
    if case == "shift":
        nudge += 1e-3
    else:
        with torch.no_grad():
            model.head.fc.weight[1] = model.head.fc.weight[0]
            model.head.fc.bias[:2] = 50.0  # classes 0 and 1 lead on every image, exactly tied
        nudge[1] = 5e-5
    model.register_forward_hook(lambda module, inputs, output: output + nudge)
    expected = r"state_dict \(agreement 1\.0000, max \|diff\| 1\.0e-03\)" if case == "shift" else r"state_dict \(agreement 0\.0000, max \|diff\| 5\.\de-05\)"
    with pytest.raises(RuntimeError, match=r"disagree with the PyTorch model on 64 images: " + expected + "; need"):
        export_student(model, arch_of(cfg), tmp_path)


def test_parity_images_must_be_raw_pixels_of_the_input_shape(tmp_path):
    cfg, model = randomised_student()
    pixels = random_pixels(8, SHAPE, torch.Generator().manual_seed(5))
    for bad in (pixels.float(), pixels[:, :1], pixels[:2]):
        with pytest.raises(ValueError, match="parity images must be uint8"):
            export_student(model, arch_of(cfg), tmp_path, bad)


def test_load_exported_refuses_what_is_not_an_export(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_exported(tmp_path)
    (tmp_path / "arch.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="not a nas-kd student export"):
        load_exported(tmp_path)


def test_random_check_images_vary_in_brightness_and_contrast_per_image():
    """After global pooling, i.i.d. noise images give nearly the same logits: a parity check on
    them would pass for a wrong graph. Each image gets its own scale and offset."""
    g = torch.Generator().manual_seed(0)
    batch = varied_batch(64, SHAPE, g)
    stds, means = batch.flatten(1).std(1), batch.flatten(1).mean(1)
    assert stds.max() / stds.min() > 2.0 and means.std() > 0.5
    pixels = random_pixels(64, SHAPE, g)
    assert pixels.dtype == torch.uint8 and pixels.float().flatten(1).std(1).max() / pixels.float().flatten(1).std(1).min() > 2.0


def test_the_parity_images_are_the_searchs_validation_images_class_balanced():
    from nas_kd.data import load_splits
    from nas_kd.export import validation_images

    images, source = validation_images("synthetic", None, split_seed=3, n=40)
    splits = load_splits("synthetic", None, seed=3)
    val = {bytes(x.numpy().tobytes()) for x in splits.val.x}
    train = {bytes(x.numpy().tobytes()) for x in splits.train.x}
    got = [bytes(x.numpy().tobytes()) for x in images]
    assert all(b in val for b in got) and not any(b in train for b in got)
    assert "validation split (split seed 3)" in source
    labels = {bytes(x.numpy().tobytes()): int(y) for x, y in zip(splits.val.x, splits.val.y, strict=True)}
    counts = np.bincount([labels[b] for b in got], minlength=splits.info.num_classes)
    assert counts.max() - counts.min() <= 1  # class-balanced
