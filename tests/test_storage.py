import multiprocessing as mp
import time

import pytest

from nas_kd.errors import UserError
from nas_kd.storage import normalise_url, open_storage, study_lock
from tests.postgres_server import postgres_bin, postgres_server

needs_pg = pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (.ci/run installs it)")


@pytest.mark.parametrize(
    "url, message",
    [
        ("banana", "invalid storage URL 'banana': use sqlite:///path/study.db or postgresql://user@host:port/dbname"),
        ("sqlite://", "invalid storage URL 'sqlite://': use sqlite:///path/study.db or postgresql://user@host:port/dbname"),
        ("sqlite:///", "invalid storage URL 'sqlite:///': SQLite needs a file, e.g. sqlite:///runs/my-study/study.db"),
        ("sqlite:///:memory:", "storage URL 'sqlite:///:memory:' is in memory: a study must outlive the process; use a file, e.g. sqlite:///study.db"),
        ("sqlite:////no/such/dir/x.db", "storage URL 'sqlite:////no/such/dir/x.db': folder '/no/such/dir' does not exist: create it or choose another path"),
        ("redis://localhost/0", "unsupported storage URL scheme 'redis' in 'redis://localhost/0': use sqlite:///path/study.db or postgresql://user@host:port/dbname"),
        ("postgresql+nosuchdriver://h/db", "storage URL 'postgresql+nosuchdriver://h/db' names driver 'nosuchdriver', which is not installed: use postgresql://... (psycopg 3)"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(UserError) as e:
        normalise_url(url)
    assert str(e.value) == message


def test_postgres_url_gets_psycopg_driver():
    assert normalise_url("postgresql://u@127.0.0.1:5432/db") == "postgresql+psycopg://u@127.0.0.1:5432/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"


def test_unreachable_server_is_a_user_error():
    with pytest.raises(UserError, match=r"cannot open storage 'postgresql\+psycopg://nobody@127.0.0.1:1/x' .*check that the database server runs"):
        open_storage("postgresql://nobody@127.0.0.1:1/x")


def test_a_missing_storage_package_is_named_not_blamed_on_the_server(tmp_path):
    """A machine without alembic's mako (the GPU machine has it only as a carried wheel): the message must say which package, not
    'check that the database server runs'. A fresh interpreter with mako made unimportable."""
    import subprocess
    import sys

    code = f"import sys; sys.modules['mako'] = None\nfrom nas_kd.storage import open_storage\nopen_storage('sqlite:///{tmp_path}/s.db')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "the Python package 'mako' is missing: install it (pip install mako)" in r.stderr, r.stderr[-2000:]
    assert "database server" not in r.stderr


def _hold(url, name, out):
    with study_lock(url, name):
        out.put(("in", time.time()))
        time.sleep(0.5)
        out.put(("out", time.time()))


def _two_holders(url):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(url, "s", q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    events = sorted((q.get(timeout=5) for _ in range(4)), key=lambda e: e[1])
    # Never both inside: in, out, in, out.
    assert [e[0] for e in events] == ["in", "out", "in", "out"]


def test_sqlite_lock_is_exclusive_across_processes(tmp_path):
    _two_holders(f"sqlite:///{tmp_path}/study.db")


@needs_pg
def test_postgres_lock_is_exclusive_across_processes():
    with postgres_server() as url:
        _two_holders(url)
        storage = open_storage(url, heartbeat_interval=1)
        from optuna.storages._heartbeat import is_heartbeat_enabled

        assert is_heartbeat_enabled(storage) and storage.get_heartbeat_interval() == 1


def _open(url, q):
    try:
        open_storage(url, heartbeat_interval=1)
        q.put("ok")
    except Exception as e:  # pragma: no cover - the failure is the assertion's message
        q.put(repr(e))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_creating_one_schema_at_once(backend, tmp_path):
    if backend == "postgresql" and postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    ctx = mp.get_context("spawn")

    def race(url):
        q = ctx.Queue()
        procs = [ctx.Process(target=_open, args=(url, q)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(q.get(timeout=5) for _ in procs) == ["ok"] * 4

    if backend == "sqlite":
        race(f"sqlite:///{tmp_path}/study.db")
    else:
        with postgres_server() as url:
            race(url)


def test_a_trial_is_stale_after_three_missed_heartbeats_and_then_retried(tmp_path):
    """Heartbeats every interval, and a dead worker's trial is failed after three missed ones (one
    late heartbeat on a loaded machine must not fail a live trial), then its parameters retried."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=2)
    assert (storage.heartbeat_interval, storage.grace_period, storage.failed_trial_callback._max_retry) == (2, 6, 2)
    assert open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=5, grace_period=7).grace_period == 7
    assert open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=None).heartbeat_interval is None
