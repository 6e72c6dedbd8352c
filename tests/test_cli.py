"""What `nas-kd` prints and returns when a command fails, is interrupted or is missing (nas_kd.cli)."""

from __future__ import annotations

import pytest

from nas_kd.errors import NonFiniteLossError, UserError


def _raising(monkeypatch, exc: BaseException) -> None:
    """Every command's work raises ``exc`` (the commands call the library through these names)."""
    import nas_kd.export
    import nas_kd.search

    def work(*args, **kwargs):
        raise exc

    monkeypatch.setattr(nas_kd.search, "run_search", work)
    monkeypatch.setattr(nas_kd.export, "export_study", work)


def test_bad_input_is_one_line_and_exit_2(cli, monkeypatch):
    _raising(monkeypatch, UserError("no such study 'x': run a search first"))
    assert cli("export", "--study", "x") == (2, "", "nas-kd: error: no such study 'x': run a search first\n")
    assert cli("search", "--bogus") == (2, "", "nas-kd: error: nas-kd: unrecognized arguments: --bogus (see 'nas-kd --help')\n")
    code, out, err = cli("search", "--trials")
    assert (code, out) == (2, "") and err == "nas-kd: error: nas-kd search: argument --trials: expected one argument (see 'nas-kd search --help')\n"


@pytest.mark.parametrize(
    "command, hint",
    [
        (["search"], "lower the full schedule's learning rate (--full lr=...) and run the search again"),
        (["export", "--study", "s"], "lower the learning rate"),  # a command with no hint of its own
    ],
)
def test_a_run_that_diverged_is_one_line_exit_1_with_what_to_change(cli, monkeypatch, command, hint):
    _raising(monkeypatch, NonFiniteLossError("loss became nan"))
    assert cli(*command) == (1, "", f"nas-kd: error: loss became nan: the run diverged; {hint}\n")


def test_the_raisers_own_hint_comes_before_the_commands(cli, monkeypatch):
    _raising(monkeypatch, NonFiniteLossError("teacher loss became inf", hint="train the teacher at lr 0.05"))
    assert cli("search") == (1, "", "nas-kd: error: teacher loss became inf: the run diverged; train the teacher at lr 0.05\n")


def test_ctrl_c_is_one_line_and_exit_130(cli, monkeypatch):
    _raising(monkeypatch, KeyboardInterrupt())
    assert cli("search") == (130, "", "nas-kd: interrupted\n")


def test_no_command_prints_the_commands_and_exits_2(cli):
    code, out, err = cli()
    assert code == 2 and err == ""
    assert all(name in out for name in ("data", "teacher", "cost", "distill", "search", "finalize", "export", "dashboard"))
