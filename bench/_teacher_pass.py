"""`TeacherPass`: a bench's frozen-teacher outputs, computed once and shared by every run."""

from __future__ import annotations

import torch

from nas_kd.distill import TeacherCache, get_mode, train
from nas_kd.models.student import build_student
from nas_kd.train import make_loaders

__all__ = ["TeacherPass"]


class TeacherPass:
    """The teacher's cached outputs per mode, built once and shared by every student, seed and
    the screen (as the search shares them across trials): each run gets loaders of its own seed
    over the same examples, which the cache matches. ``planned`` modes get their caches at the
    first run that needs one, the widest first (`prepare`); a call that trains nothing builds none."""

    def __init__(self, teacher, splits, batch_size: int, device, planned=()):
        self.teacher, self.splits, self.batch_size, self.device = teacher, splits, batch_size, device
        self._caches: dict[str, TeacherCache] = {}
        self._planned = list(planned)

    def loaders(self, seed: int):
        return make_loaders(self.splits, batch_size=self.batch_size, device=self.device, seed=seed, crop=False)

    def cache(self, mode: str) -> TeacherCache | None:
        """A cache holding what ``mode`` (a name or `get_mode` spec) reads: one built for a wider
        mode (full covers kd) serves."""
        if not get_mode(mode).uses_teacher:
            return None
        if self._planned:
            planned, self._planned = self._planned, []
            self.prepare([*planned, mode])
        if mode not in self._caches:
            wider = [c for c in self._caches.values() if c.covers(get_mode(mode))]
            self._caches[mode] = wider[0] if wider else TeacherCache(self.teacher, self.loaders(0)[0], mode, num_classes=self.splits.info.num_classes)
        return self._caches[mode]

    def prepare(self, modes: list[str]) -> None:
        """Build the widest caches first, so narrower modes reuse them instead of a pass of their own."""
        loader = self.loaders(0)[0]
        size = {m: TeacherCache.estimate_bytes(self.teacher, loader, get_mode(m), self.splits.info.input_shape, self.splits.info.num_classes) for m in modes if get_mode(m).uses_teacher}
        for mode in sorted(size, key=size.get, reverse=True):
            self.cache(mode)

    def covering(self, modes: list[str]) -> TeacherCache | None:
        """One cache holding what every mode of ``modes`` reads (the widest is built first, see
        `prepare`), or None when no mode reads the teacher or no single cache covers them all."""
        needed = [get_mode(m) for m in modes if get_mode(m).uses_teacher]
        if not needed:
            return None
        self.prepare(modes)
        return next((c for c in self._caches.values() if all(c.covers(m) for m in needed)), None)

    def train(self, cfg, schedule, mode: str, seed: int, evaluate_test: bool) -> dict:
        """One student under ``schedule`` on ``seed`` (`nas_kd.distill.train`'s metrics), the
        teacher's outputs from this pass's cache."""
        torch.manual_seed(seed)
        student = build_student(cfg, self.splits.info.channels, self.splits.info.num_classes)
        cache = self.cache(mode)
        return train(
            student, self.teacher if get_mode(mode).uses_teacher else None, self.splits, schedule, mode, device=self.device, seed=seed, evaluate_test=evaluate_test, log=None,
            loaders=self.loaders(seed), teacher_cache=cache, teacher_attention=cache.attention_state if cache else None,
        )  # fmt: skip
