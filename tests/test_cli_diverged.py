"""A run whose loss becomes NaN or inf ends the command with one line naming what to change,
exit code 1 (nothing in the command line was malformed), no traceback, and no file written."""

from __future__ import annotations

from pathlib import Path

MBV2 = str(Path(__file__).resolve().parent.parent / "search_spaces" / "mbv2.yaml")


def _one_line(err: str) -> None:
    assert err.startswith("nas-kd: error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_teacher_that_diverges_says_which_rate_to_try(cli, in_tmp):
    # A real divergence: the reconstruction head's last conv has no normalisation after it.
    code, out, err = cli("teacher", "--dataset", "synthetic", "--arch", "resnet8", "--reconstruction", "--lr", "20", "--epochs", "1", "--train-subset", "256", "--device", "cpu", "--no-progress")
    assert code == 1, (out, err)
    _one_line(err)
    assert "training the resnet8 teacher at lr 20: teacher loss became" in err and "the run diverged" in err
    # The suggested command trains what was asked for, at half the rate.
    assert "'nas-kd teacher --dataset synthetic --preset quick --arch resnet8 --lr 10 --epochs 1 --train-subset 256 --reconstruction'" in err
    assert not (in_tmp / "runs" / "teachers").exists() or not any((in_tmp / "runs" / "teachers").iterdir())


def test_a_student_that_diverges_is_told_of_distills_lr(cli, in_tmp, monkeypatch):
    import nas_kd.distill
    from nas_kd.errors import NonFiniteLossError

    def diverges(*args, **kwargs):
        raise NonFiniteLossError("distillation loss became nan")

    monkeypatch.setattr(nas_kd.distill, "train", diverges)
    code, out, err = cli("distill", "--space", MBV2, "--uniform", "0", "--dataset", "synthetic", "--mode", "ce", "--epochs", "1", "--train-subset", "64", "--device", "cpu", "--no-progress")
    assert code == 1, (out, err)
    _one_line(err)
    assert "distillation loss became nan: the run diverged; try a lower --lr" in err

