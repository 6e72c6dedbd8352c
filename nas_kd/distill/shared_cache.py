"""A `TeacherCache` filled once by a parent process and opened by its workers.

`nas-kd search --jobs N` trains in N processes and a parallel `finalize` in worker processes. Each
used to fill its own cache of the frozen teacher's outputs: one teacher pass per training example
and view, which on the standard preset (54,000 Fashion-MNIST images, two views, mode full) is
4.5 GiB and minutes of a CPU, per process. Now the parent fills it once, `shared_file` writes it
to one file for as long as the workers run, and each worker `open_cache`s it:

* torch's zip format, read with ``weights_only=True`` and ``mmap=True``: on a CPU a worker's
  tensors are views of the file's pages, so N processes hold one copy in memory (the page
  cache's); on a GPU each worker copies it to its device once (the teacher pass is shared, the
  device memory is per process);
* a fingerprint of everything the outputs depend on (the teacher's weights and buffers, the
  training images, the views, the normalisation, the stages kept) is written with it and checked
  on opening: a file of another teacher or other data is refused with a reason, and the worker
  fills its own cache as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from nas_kd.data import DeviceLoader
from nas_kd.distill.cache import TeacherCache
from nas_kd.distill.modes import Mode
from nas_kd.errors import one_line

__all__ = ["CACHE_FILE", "write_cache", "open_cache", "open_cache_for", "shared_file"]

CACHE_FILE = "teacher-cache.pt"
FORMAT = 1  # the file's layout; a file of another layout is refused, not misread


def _update(h, t: torch.Tensor) -> None:
    # Raw bytes, any dtype (bfloat16 has no NumPy type, uint8 views of it do).
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def _fingerprint(teacher: nn.Module, x: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor, views: int, map_stages: Sequence[int], descriptors: bool) -> str:
    """SHA-256 of what a cache's contents depend on; training images are hashed whole (~0.1 s for
    54,000 28x28 images) so that two splits of the same size never pass for each other."""
    h = hashlib.sha256()
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        _update(h, t)
    for t in (x, mean, inv_std):
        _update(h, t)
    h.update(json.dumps({"shape": list(x.shape), "views": views, "map_stages": list(map_stages), "descriptors": descriptors}).encode())
    return h.hexdigest()


def write_cache(cache: TeacherCache, path: Path) -> None:
    """``cache`` to ``path`` (written aside and renamed: a reader never sees half a file)."""
    x, (mean, inv_std) = cache._data, cache._norm
    payload = {
        "format": FORMAT,
        "fingerprint": _fingerprint(cache.teacher, x, mean, inv_std, cache.views, cache.map_stages, cache.descriptors is not None),
        "map_stages": list(cache.map_stages),
        "logits": cache.logits.cpu(),
        "maps": {str(j): t.cpu() for j, t in cache.maps.items()},
        "descriptors": [d.cpu() for d in cache.descriptors] if cache.descriptors is not None else None,
        "attention_state": {k: v.cpu() for k, v in cache.attention_state.items()} if cache.attention_state is not None else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not files.atomic_write: its fsync would force GiBs to disk (4.5 on the standard preset) for
    # a file deleted when the run ends; workers read it from the page cache.
    part = path.with_name(path.name + ".part")
    try:
        torch.save(payload, part)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def open_cache(path: Path, teacher: nn.Module, loader: DeviceLoader, mode: Mode) -> tuple[TeacherCache | None, str]:
    """(the cache in ``path`` for ``teacher`` on ``loader``'s data, "") or (None, why not)."""
    if loader.views is None:
        return None, "this run crops at random, so its teacher runs live"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        return None, f"cannot read {path}: {one_line(e)}"
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return None, f"{path} is not a teacher cache of format {FORMAT}"
    stages, descriptors = tuple(payload["map_stages"]), payload["descriptors"]
    if payload["fingerprint"] != _fingerprint(teacher, loader.x, loader.mean, loader.inv_std, loader.views, stages, descriptors is not None):
        return None, f"{path} was filled for another teacher or other training data"

    def here(t: torch.Tensor) -> torch.Tensor:
        return t if loader.device.type == "cpu" else t.to(loader.device)  # a CPU keeps the file's pages

    attention = payload["attention_state"]
    cache = TeacherCache.from_parts(
        teacher,
        loader,
        map_stages=stages,
        logits=here(payload["logits"]),
        maps={int(j): here(t) for j, t in payload["maps"].items()},
        descriptors=[here(d) for d in descriptors] if descriptors is not None else None,
        attention_state=attention,  # on the CPU, as `fit_teacher_attention` returns it
    )
    if not cache.covers(mode):
        return None, f"{path} lacks teacher outputs that mode '{mode.name}' reads"
    return cache, ""


def open_cache_for(path: Path, teacher: nn.Module, splits, schedule, device: torch.device, mode: Mode) -> tuple[TeacherCache | None, str]:
    """`open_cache` for a worker that has the data split but no loader yet: the training loader a
    run on ``schedule`` would get (its views are what the file must match)."""
    from nas_kd.train import make_loaders

    loader = make_loaders(splits, batch_size=schedule.batch_size, device=device, seed=0, crop=schedule.crop)[0]
    return open_cache(path, teacher, loader, mode)


@contextlib.contextmanager
def shared_file(cache: TeacherCache | None, path: Path) -> Iterator[Path | None]:
    """``cache`` written to ``path`` while the block runs (None: nothing to share), then deleted.
    Workers that opened it keep reading it: on POSIX an open mapping outlives the file's name.
    Once written the cache is not held here, so a caller that trains nothing itself can free its
    device copy (4.5 GiB on the standard preset) while the workers run."""
    if cache is None:
        yield None
        return
    try:
        write_cache(cache, path)
        del cache
        yield path
    finally:
        path.unlink(missing_ok=True)
