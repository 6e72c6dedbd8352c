"""`nas-kd distill` end to end on synthetic data, and its one-line refusals."""

import pytest

from nas_kd.models.teachers import build_teacher, save_teacher


@pytest.fixture
def teacher_file(in_tmp):
    """An (untrained) resnet8 checkpoint for `synthetic`, so no test trains a teacher."""

    def write(recon: bool = False):
        model = build_teacher("resnet8", 1, 10, reconstruction=(16, 16) if recon else None)
        meta = {"dataset": "synthetic", "num_classes": 10, "input_shape": [1, 16, 16], "arch": "resnet8", "reconstruction": recon, "decoder_version": 2}
        return str(save_teacher(in_tmp / f"t{int(recon)}.pt", model, meta))

    return write


@pytest.fixture
def student_file(in_tmp):
    from test_distill_step import TINY

    path = in_tmp / "student.json"
    path.write_text(TINY.to_json())
    return str(path)


COMMON = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "64", "--device", "cpu", "--preset", "quick"]


def test_distils_one_student_and_prints_val_and_test_accuracy(cli, teacher_file, student_file):
    code, out, err = cli("distill", "--student-config", student_file, "--teacher", teacher_file(), "--mode", "full", "--loss-weights", "kd=0.7", *COMMON)
    assert code == 0, err
    assert "mode: full (ce=0.5, kd=0.7," in out
    epoch = [line for line in out.splitlines() if line.startswith("full epoch 1/1")]
    assert len(epoch) == 1 and "discriminator accuracy feat " in epoch[0] and " logit " in epoch[0] and " logit-class " in epoch[0]
    val = [line for line in out.splitlines() if line.startswith("val accuracy:")]
    test = [line for line in out.splitlines() if line.startswith("test accuracy:")]
    assert len(val) == len(test) == 1 and 0 <= float(test[0].split()[-1]) <= 1


def test_without_mode_it_distils_in_the_presets_mode(cli, teacher_file, student_file, monkeypatch):
    """What a search would train the student with: the preset's mode (kd), not a fixed one."""
    import dataclasses

    from nas_kd import config

    code, out, err = cli("distill", "--student-config", student_file, "--teacher", teacher_file(), *COMMON)
    assert code == 0, err
    assert "mode: kd (ce=0.5, kd=0.5; T=4)" in out
    monkeypatch.setitem(config.PRESETS, "quick", dataclasses.replace(config.PRESETS["quick"], mode="ce"))
    code, out, err = cli("distill", "--student-config", student_file, "--teacher", teacher_file(), *COMMON)
    assert code == 0, err
    assert "mode: ce (ce=1; T=4)" in out and "teacher:" not in out


def test_ce_from_a_space_member_needs_no_teacher(cli, in_tmp):
    from pathlib import Path

    space = Path(__file__).resolve().parent.parent / "search_spaces" / "mbv2.yaml"
    code, out, err = cli("distill", "--space", space, "--uniform", "0", "--mode", "ce", *COMMON)
    assert code == 0, err
    assert "teacher:" not in out and "test accuracy:" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "bogus"], "unknown distillation mode 'bogus': choose one of ce, kd"),
        (["--loss-weights", "kd=1,wat=2"], "unknown key 'wat'; valid keys: ce, kd, l1"),
        (["--loss-weights", "kd=-2"], "'kd' must be finite and >= 0"),
        (["--mode", "zhang", "--teacher", "resnet8"], "needs a teacher trained with the reconstruction head: add --teacher-recon"),
        (["--uniform", "2"], "--uniform goes with --space"),
    ],
)
def test_bad_options_exit_2_with_one_line(cli, student_file, args, message):
    code, out, err = cli("distill", "--student-config", student_file, *args, *COMMON)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_zhang_refuses_a_checkpoint_without_the_reconstruction_head(cli, teacher_file, student_file):
    code, _, err = cli("distill", "--student-config", student_file, "--teacher", teacher_file(), "--mode", "zhang", *COMMON)
    assert code == 2 and "'nas-kd teacher --reconstruction'" in err
    code, out, err = cli("distill", "--student-config", student_file, "--teacher", teacher_file(recon=True), "--mode", "zhang", *COMMON)
    assert code == 0, err
