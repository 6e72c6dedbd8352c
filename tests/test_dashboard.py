"""`nas-kd dashboard` serves the real optuna-dashboard; the study and its metric names come back over HTTP."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest

pytest.importorskip("optuna_dashboard")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_the_study_and_metric_names(in_tmp):
    storage = f"sqlite:///{in_tmp / 'study.db'}"
    study = optuna.create_study(study_name="dash", storage=storage, direction="maximize")
    study.set_metric_names(["val_accuracy"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nas_kd", "dashboard", "--study", "dash", "--storage", storage, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, studies = time.monotonic() + 60, None
        while time.monotonic() < deadline and studies is None:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                studies = get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        assert studies is not None, "the dashboard did not answer within 60 s"
        (summary,) = [s for s in studies if s["study_name"] == "dash"]
        detail = get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
        assert detail["name"] == "dash" and detail["objective_names"] == ["val_accuracy"]
        assert len(detail["trials"]) == 3 and detail["directions"] == ["maximize"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_refuses_an_unknown_study(in_tmp, cli):
    code, _, err = cli("dashboard", "--study", "nope", "--port", "8099")
    assert code == 2 and "no study 'nope'" in err


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_a_port_outside_1_to_65535_is_refused_before_the_study_is_opened(in_tmp, cli, port):
    code, _, err = cli("dashboard", "--study", "nope", "--port", port)
    assert code == 2 and err == f"nas-kd: error: --port must be 1..65535, got {port}\n"


def test_the_dashboard_listens_on_loopback_only(in_tmp, cli, monkeypatch):
    """optuna-dashboard has no authentication: on another interface anyone on the network could
    read (and delete) the study."""
    import optuna_dashboard

    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, host, port: served.append((storage, host, port)))
    storage = f"sqlite:///{in_tmp / 'study.db'}"
    optuna.create_study(study_name="dash", storage=storage)
    code, out, err = cli("dashboard", "--study", "dash", "--storage", storage, "--port", "65535")
    assert code == 0, err
    assert served == [(storage, "127.0.0.1", 65535)] and "http://127.0.0.1:65535/dashboard" in out
