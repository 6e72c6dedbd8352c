"""Write one named section of docs/BENCHMARKS.md, leaving the other sections as they are.

Each bench script owns a section between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` and
rewrites only that, so scripts can run in any order and on different machines.
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery table below is written by a script in `bench/`; each section names its command, hardware, seeds and date.\n"


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "no GPU"
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section called ``name`` with ``body`` (markdown)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else HEADER
    stamp = _dt.date.today().isoformat()
    block = f"<!-- BEGIN {name} -->\n{body.rstrip()}\n\n_Written {stamp} by `bench/`._\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
