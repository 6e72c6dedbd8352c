"""Optuna storages for nas-kd: URL checks, heartbeats, and a lock shared by every worker.

Many workers, one study
-----------------------
Any number of ``nas-kd search --storage URL`` processes share a study through Optuna's RDB
storage. Each running trial sends a **heartbeat** every ``heartbeat_interval`` seconds; a trial
whose heartbeat is older than ``grace_period`` belongs to a dead worker (SIGKILL, lost machine)
and is marked FAIL by the next worker that looks, and Optuna's ``RetryFailedTrialCallback``
enqueues the same parameters again, so no candidate is lost to a crash.

`study_lock` serialises the few moments when workers must agree: claiming the next trial (so
exactly the requested number run, never one more) and deciding who finalises the study. On
PostgreSQL it is a session-level advisory lock (works across machines); on SQLite, a file lock
next to the database (one machine, which is all SQLite supports anyway).

URLs
----
``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``postgresql://user@host:port/db``
(served by psycopg 3 through SQLAlchemy's ``postgresql+psycopg`` driver; ``pip install
'nas-kd[postgres]'``), or any SQLAlchemy URL whose driver is installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import warnings
from pathlib import Path

from nas_kd.errors import UserError

__all__ = ["normalise_url", "open_storage", "study_lock", "is_sqlite", "sqlite_path"]

URL_FORMS = "sqlite:///path/study.db or postgresql://user@host:port/dbname"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite:///...`` URL."""
    return Path(url.split("sqlite:///", 1)[1])


def normalise_url(url: str) -> str:
    """Validate a storage URL and pick an installed driver; `UserError` naming the fix otherwise."""
    url = (url or "").strip()
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest:
        raise UserError(f"invalid storage URL '{url}': use {URL_FORMS}")
    base, _, driver = scheme.partition("+")
    if base == "sqlite":
        if not url.startswith("sqlite:///") or url == "sqlite:///" or url.endswith("/"):
            raise UserError(f"invalid storage URL '{url}': SQLite needs a file, e.g. sqlite:///runs/my-study/study.db")
        if ":memory:" in url:
            raise UserError(f"storage URL '{url}' is in memory: a study must outlive the process; use a file, e.g. sqlite:///study.db")
        folder = sqlite_path(url).parent
        if not folder.is_dir():
            raise UserError(f"storage URL '{url}': folder '{folder}' does not exist: create it or choose another path")
        return url
    if base in ("postgresql", "postgres"):
        if driver in ("", "psycopg"):
            if importlib.util.find_spec("psycopg") is None:
                raise UserError(f"storage URL '{url}' needs the psycopg driver: pip install 'nas-kd[postgres]'")
            return f"postgresql+psycopg://{rest}"
        if importlib.util.find_spec(driver) is None:
            raise UserError(f"storage URL '{url}' names driver '{driver}', which is not installed: use postgresql://... (psycopg 3)")
        return url
    if base == "mysql":
        mod = {"": "MySQLdb", "pymysql": "pymysql", "mysqlconnector": "mysql.connector"}.get(driver, driver)
        if importlib.util.find_spec(mod.split(".")[0]) is None:
            raise UserError(f"storage URL '{url}' needs a MySQL driver that is not installed: pip install pymysql and use mysql+pymysql://...")
        return url
    raise UserError(f"unsupported storage URL scheme '{scheme}' in '{url}': use {URL_FORMS}")


def open_storage(url: str, *, heartbeat_interval: int | None = 10, grace_period: int | None = None, max_retry: int = 2):
    """An `optuna.storages.RDBStorage` with heartbeats and retry of trials from dead workers.

    ``heartbeat_interval`` seconds between heartbeats (None: no heartbeats); ``grace_period``
    defaults to 3 intervals. A failed trial's parameters are retried at most ``max_retry`` times.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = normalise_url(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if is_sqlite(url) else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in practice since 2.8
            kwargs = {}
            if heartbeat_interval:
                kwargs = dict(
                    heartbeat_interval=int(heartbeat_interval),
                    grace_period=int(grace_period or 3 * heartbeat_interval),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                )
            if is_sqlite(url):
                # Two processes creating the same SQLite schema at once race on alembic's version
                # row (IntegrityError): create it under the study file's lock.
                with _file_lock(sqlite_path(url)):
                    return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
            with study_lock(url, "(schema)"):  # N workers starting at once on an empty database
                return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as e:  # a storage dependency (alembic's mako, a database driver): not the server's fault
        name = e.name or getattr(e.__cause__, "name", None) or "its database driver"  # optuna re-raises the driver's
        raise UserError(f"cannot open storage '{url}': the Python package '{name}' is missing: install it (pip install {name})") from None
    except optuna.exceptions.StorageInternalError as e:
        cause = e.__cause__ or e.__context__ or e
        first = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [cause.__class__.__name__])[0][:200]
        raise UserError(f"cannot open storage '{url}' ({first}): check that the database server runs and the URL is right") from None
    except Exception as e:  # SQLAlchemy's own errors for unreachable servers, bad files, ...
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
        raise UserError(f"cannot open storage '{url}' ({e.__class__.__name__}: {first}): check that the database server runs and the URL is right") from None


def _lock_key(study_name: str) -> int:
    # pg_advisory_lock takes a signed 64-bit key; derive it from the study name.
    return int.from_bytes(hashlib.sha256(f"nas-kd:{study_name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _file_lock(db_path: Path):
    """An exclusive flock on ``<db>.lock`` (the file persists; the lock dies with the process)."""
    with open(db_path.with_name(db_path.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def study_lock(url: str, study_name: str):
    """Hold a lock that every worker of ``study_name`` on ``url`` respects (see module docstring)."""
    url = normalise_url(url)
    if is_sqlite(url):
        with _file_lock(sqlite_path(url)):
            yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(study_name)})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(study_name)})
            elif engine.dialect.name == "mysql":
                conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": f"nas-kd:{study_name}"[:64]})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:k)"), {"k": f"nas-kd:{study_name}"[:64]})
            else:
                raise UserError(f"storage '{url}' has no cross-process lock nas-kd knows: use SQLite or PostgreSQL")
    finally:
        engine.dispose()
