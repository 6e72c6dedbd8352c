"""What a `--jobs` worker saves by opening its parent's teacher cache instead of filling its own (CPU).

A `--jobs N` search and a parallel finalize fill the frozen teacher's outputs once, in the parent,
and share them through one file (`nas_kd.distill.shared_cache`); each worker used to fill its own.
This bench measures both on the standard preset's data (all 54,000 Fashion-MNIST training images,
two views, crop-free as its brief trials run; the shipped resnet20; mode full, which keeps the
most): the parent's fill and write, then ``--workers`` processes at once (one torch thread each, as
`--jobs` gives them on this CPU) that either open the file or fill their own cache. Per worker:
seconds until the outputs are ready, seconds to read every output once (what the first epoch
does), and the resident memory the outputs added, private (anonymous) and file-backed (the
page cache's, one copy for every process that maps it).

    python -m bench.shared_cache                                  # ~10 min on 2 cores, ~15 GiB of RAM
    python -m bench.shared_cache --train-subset 4000 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "resident_mib", "render"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "shared_cache.json"
SECTION = "shared-cache-cpu"
MODE = "full"
KINDS = ("open", "fill")


def resident_mib() -> dict[str, float]:
    """This process's resident memory by kind (Linux /proc/self/status), MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _setup(train_subset: int | None, data_dir: str | None):
    import torch

    from nas_kd.config import get_preset
    from nas_kd.data import load_splits
    from nas_kd.models.shipped import DEFAULT_SPEC
    from nas_kd.models.teachers import resolve_teacher
    from nas_kd.train import make_loaders

    cpu = torch.device("cpu")
    preset = get_preset("standard")
    splits = load_splits("fashion-mnist", data_dir, seed=0, train_subset=train_subset)
    teacher = resolve_teacher(DEFAULT_SPEC, "fashion-mnist", preset.teacher, preset="standard", device=cpu, data_dir=data_dir, reconstruction=True, log=lambda *_: None)[0]
    loader = make_loaders(splits, batch_size=preset.brief.batch_size, device=cpu, seed=0, crop=False)[0]
    return splits, teacher, loader


def _read_all(cache) -> float:
    """Every cached output once, in chunks (a float copy of the maps at once would double them)."""
    total = float(cache.logits.sum())
    for t in [*cache.maps.values(), *(cache.descriptors or [])]:
        for chunk in t.split(4096):
            total += float(chunk.float().sum())
    return total


def _worker(kind: str, path: str, train_subset: int | None, data_dir: str | None) -> dict:
    """One worker process: its outputs opened from ``path`` or filled here; times and memory."""
    import torch

    from nas_kd.distill import TeacherCache, get_mode
    from nas_kd.distill.shared_cache import open_cache

    torch.set_num_threads(1)
    splits, teacher, loader = _setup(train_subset, data_dir)
    before = resident_mib()
    start = time.perf_counter()
    if kind == "open":
        cache, why = open_cache(Path(path), teacher, loader, get_mode(MODE))
        if cache is None:
            raise RuntimeError(why)
    else:
        cache = TeacherCache(teacher, loader, MODE, num_classes=splits.info.num_classes)
    ready = time.perf_counter() - start
    checksum = _read_all(cache)
    read = time.perf_counter() - start - ready
    after = resident_mib()
    return {"kind": kind, "seconds_ready": ready, "seconds_first_read": read, "checksum": checksum, "anon_mib": after["RssAnon"] - before["RssAnon"], "file_mib": after["RssFile"] - before["RssFile"]}


def measure(workers: int, train_subset: int | None, data_dir: str | None) -> dict:
    import torch

    from nas_kd.distill import TeacherCache
    from nas_kd.distill.shared_cache import write_cache

    splits, teacher, loader = _setup(train_subset, data_dir)
    start = time.perf_counter()
    cache = TeacherCache(teacher, loader, MODE, num_classes=splits.info.num_classes)
    fill = time.perf_counter() - start
    nbytes = cache.nbytes
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher-cache.pt"
        start = time.perf_counter()
        write_cache(cache, path)
        write = time.perf_counter() - start
        file_bytes = path.stat().st_size
        del cache
        runs = []
        ctx = multiprocessing.get_context("spawn")
        for kind in KINDS:  # all of one kind at once, as --jobs runs them
            print(f"shared_cache: {workers} workers {kind} the outputs", file=sys.stderr, flush=True)
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                runs += list(pool.map(_worker, [kind] * workers, [str(path)] * workers, [train_subset] * workers, [data_dir] * workers))
    return {
        "examples": len(splits.train),
        "views": loader.views,
        "mode": MODE,
        "workers": workers,
        "parent_threads": torch.get_num_threads(),
        "parent_fill_seconds": fill,
        "write_seconds": write,
        "cache_bytes": nbytes,
        "file_bytes": file_bytes,
        "runs": runs,
    }


def render(result: dict, argv: list[str]) -> str:
    from bench._report import hardware

    rows = []
    for kind, label in (("open", "open the parent's file (now)"), ("fill", "fill their own (before)")):
        rs = [r for r in result["runs"] if r["kind"] == kind]
        if not rs:
            continue
        mean = {key: statistics.fmean(r[key] for r in rs) for key in ("seconds_ready", "seconds_first_read", "anon_mib", "file_mib")}
        # The machine holds every worker's private memory, and a mapped file's pages once.
        total = sum(r["anon_mib"] for r in rs) + max(r["file_mib"] for r in rs)
        rows.append(f"| {label} | {len(rs)} | {mean['seconds_ready']:.2f} | {mean['seconds_first_read']:.1f} | {mean['anon_mib']:.0f} | {mean['file_mib']:.0f} | {total / 1024:.2f} |")
    sums = [r["checksum"] for r in result["runs"]]
    spread = (max(sums) - min(sums)) / max(abs(s) for s in sums)
    return "\n".join(
        [
            "## Teacher outputs shared by `--jobs` workers (CPU)",
            "",
            f"Command: `{' '.join(['python -m bench.shared_cache', *map(shlex.quote, argv)])}`  ",
            f"Hardware: {hardware()}  ",
            f"Date: {time.strftime('%Y-%m-%d')}",
            "",
            f"Mode {result['mode']}'s teacher outputs (logits, every stage's map in bfloat16, the attention descriptors) for {result['examples']:,} Fashion-MNIST training images "
            f"x {result['views']} views, the shipped resnet20: {result['cache_bytes'] / 2**30:.2f} GiB. The parent fills them once ({result['parent_threads']} threads: "
            f"{result['parent_fill_seconds']:.1f} s) and writes them to one file ({result['file_bytes'] / 2**30:.2f} GiB in {result['write_seconds']:.1f} s). "
            f"Then {result['workers']} worker processes at once, one torch thread each, get the outputs either way and read every one of them once; "
            "memory is what the outputs added to each worker's resident set. "
            + f"The sums of every output read agree to {spread:.0e} relative (a fill on another thread count rounds differently; opened outputs are the parent's exactly).",
            "",
            "| workers | processes | s until ready | s to read all once | private MiB each | file-backed MiB each | GiB for all of them |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="worker processes at once (default 2: --jobs 2 on this CPU)")
    ap.add_argument("--train-subset", type=int, default=None, help="training images (default: all 54,000, as the standard preset)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-write", action="store_true", help="print the table; leave docs/ alone")
    args = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.workers < 1 or (args.train_subset is not None and args.train_subset < 1):
        print("shared_cache: --workers and --train-subset must be positive", file=sys.stderr)
        raise SystemExit(2)
    result = measure(args.workers, args.train_subset, args.data_dir)
    body = render(result, argv)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result | {"argv": argv, "date": time.strftime("%Y-%m-%d")}, indent=1))
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
