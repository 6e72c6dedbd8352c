"""Atomic file writes: a crash or Ctrl-C never leaves half a checkpoint, report or JSON file."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "digest"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path`` (atomic on POSIX). The file gets the umask's permissions, not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (teacher fingerprints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
