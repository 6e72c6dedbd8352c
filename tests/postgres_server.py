"""A throw-away PostgreSQL server for tests: initdb in a temporary folder, listen on 127.0.0.1 only.

Found through /usr/lib/postgresql/*/bin (Debian's `postgresql` package, installed by .ci/run).
initdb refuses to run as root, so as root the cluster is created and run as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server(dbname: str = "nas_kd"):
    """Yield a SQLAlchemy URL (postgresql+psycopg://...) of a fresh, empty database."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="nas-kd-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
    data, sock = root / "data", root / "sock"
    port = _free_port()

    def run(*cmd, **kw):
        return subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, **kw)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    os.makedirs(sock, exist_ok=True)
    if as_root:
        shutil.chown(sock, "postgres")
    run(
        str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
        "-o", f"-h 127.0.0.1 -p {port} -k {sock} -c fsync=off -c max_connections=60",
        "start",
    )
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{dbname}"
    finally:
        with contextlib.suppress(Exception):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)
