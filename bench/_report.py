"""Write one named section of docs/BENCHMARKS.md, leaving the other sections as they are.

Each bench script owns a section between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` and
rewrites only that, so scripts can run in any order and on different machines.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery table below is written by a script in `bench/`; each section names its command, hardware, seeds and date.\n"


@functools.cache
def numerics_fingerprint() -> str:
    """What this host's CPU kernels compute, bit for bit: the hash of a tiny conv net's weights
    after 5 seeded SGD steps on one thread. Two VMs of one cloud kind rounded differently (other
    brief scores, other search winners; docs/SEARCH.md), and torch's kernel dispatch level
    (``ATEN_CPU_CAPABILITY``) changes it, so rows from hosts with different fingerprints do not pair
    run for run. Costs about 0.1 s, once per process."""
    import torch
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread count changes reduction order: fingerprint the host, not the setting
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
            net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            for _ in range(5):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest()[:10]
    return f"{digest} ({torch.backends.cpu.get_cpu_capability()})"


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "no GPU"
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}, CPU numerics {numerics_fingerprint()}"


def code_revision(root: Path | None = None) -> str:
    """The commit the code runs at (short hash), "+dirty" when tracked files outside docs/ differ
    from it (a bench writes its results there as it goes): what a kept result was measured with.
    "unknown" outside a git checkout."""
    import subprocess

    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def resolve_commit(rev: str, root: Path | None = None) -> str | None:
    """``rev`` (a hash, tag or branch) as a full commit hash in the checkout at ``root``; None where
    it names no commit there."""
    import subprocess

    root = root or Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def trained_since(revision: str | None, commit: str, root: Path | None = None) -> bool:
    """Whether a result recorded at ``revision`` (as `code_revision` wrote it) was measured with
    ``commit``'s code in it: ``commit`` is that revision or one of its ancestors. A result with no
    revision, "unknown", or one this checkout does not hold counts as older (retraining it costs
    time; keeping a stale one would cost the result its meaning)."""
    import subprocess

    if not revision or revision == "unknown":
        return False
    root = root or Path(__file__).resolve().parent.parent
    base = revision.removesuffix("+dirty")
    done = subprocess.run(["git", "merge-base", "--is-ancestor", commit, base], cwd=root, capture_output=True)
    return done.returncode == 0


def record_run(path: Path, key: str, run: dict, record: dict, write: bool = True) -> dict:
    """A finished run added to a bench's ``record`` (``{"runs": {...}}``): kept in the file at
    ``path`` (`keep_run`, the file's record returned) where the bench writes, else (``--no-write``)
    in memory alone."""
    if write:
        return keep_run(path, key, run)
    record["runs"][key] = run
    return record


def keep_run(path: Path, key: str, run: dict) -> dict:
    """Add one finished run under ``key`` to the ``{"runs": {...}}`` record at ``path`` and return
    the whole record as it now stands: read, merged and replaced atomically under a lock, so two
    benches keeping runs in one file (other seeds, another question) keep each other's runs where
    each rewriting what it read at its start would drop the other's."""
    import fcntl
    import json
    import tempfile

    from nas_kd.files import atomic_write

    path = Path(path)
    # The lock lives outside the results folder (nothing untracked beside the results) and is
    # named by the results file, so only writers of the same file wait for each other.
    lock = Path(tempfile.gettempdir()) / f"nas-kd-results-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            record = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
            record["runs"][key] = run
            atomic_write(path, lambda f: f.write(json.dumps(record, indent=1)), binary=False)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return record


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


def budget_slug(budget: str) -> str:
    """A budget's text as a file or section name part: "500k" stays, "memory:32k,size:64k" becomes
    "memory-32k-size-64k"."""
    return re.sub(r"[^a-z0-9.]+", "-", budget.lower()).strip("-")
