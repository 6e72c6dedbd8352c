"""`TeacherCache`: the frozen teacher's outputs, computed once per training example and view.

A frozen teacher in eval mode gives the same answer for the same input, so where augmentation
has few outcomes — none, or a horizontal flip — its outputs are computed once per example and
*view* (identity, flipped) and looked up by (index, flipped) from `DeviceLoader.batches`, for
every epoch and every `train` call on the same teacher and data (the search builds one per study
and passes it to every trial). With random crops there are too many views: the trainer runs the
teacher live instead.

What is kept, for each view and training example — only what the mode reads:

* logits, float32;
* the stage maps, in bfloat16 (half of float32's memory; 8 significant bits are ample for a
  regression target), of every teacher stage for modes that match all pairs (the pairing
  depends on the student) and of the deepest for ``stages="last"`` — none when only ``desc``
  needs the teacher's stages;
* for ``desc``, the frozen teacher attention's descriptor of every stage, float32, so neither the
  maps nor the attention are needed per step.

Memory per example *and view* (Fashion-MNIST 28×28, ResNet-20 teacher; two views with flips):
logits 40 B; maps 42.9 KiB with all three stages (16×28², 32×14², 64×7² values), 6.1 KiB with
the deepest only; descriptors 0.4 KiB. Mode ``full`` on the quick preset's 4,000 brief examples
takes 339 MiB (measured); on the whole 54,000-example split 4.5 GiB.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas_kd.data import DeviceLoader
from nas_kd.device import autocast
from nas_kd.distill.adapters import stage_sizes
from nas_kd.distill.attention_fit import fit_teacher_attention, load_teacher_attention
from nas_kd.distill.modes import Mode, get_mode
from nas_kd.distill.outputs import TeacherOutputs

__all__ = ["TeacherCache", "cached_map_stages"]

MAP_DTYPE = torch.bfloat16
BUILD_BATCH = 512  # examples per teacher pass while building: no gradients, so larger is cheaper


def cached_map_stages(mode: Mode, teacher: nn.Module) -> tuple[int, ...]:
    """Teacher stages whose maps ``mode`` reads, for any student."""
    if not mode.uses_teacher_maps:
        return ()
    deepest = len(teacher.stage_channels) - 1
    return tuple(range(deepest + 1)) if mode.stages == "all" else (deepest,)


class TeacherCache:
    """Teacher logits, stage maps and descriptors per (training example, view) of ``loader``."""

    def __init__(
        self,
        teacher: nn.Module,
        loader: DeviceLoader,
        mode: Mode | str,
        *,
        num_classes: int,
        attention_state: dict[str, torch.Tensor] | None = None,
    ):
        mode = get_mode(mode)
        if loader.views is None:
            raise ValueError("the loader crops at random: its views cannot be enumerated, so the teacher must run live")
        self.teacher, self.views, self.num_examples = teacher, loader.views, loader.num_examples
        self.map_stages = cached_map_stages(mode, teacher)
        self._data, self._norm = loader.x, (loader.mean, loader.inv_std)
        self.attention_state = None
        attention = None
        if mode.weights.desc:
            self.attention_state = attention_state or fit_teacher_attention(teacher, loader, num_classes)
            attention = load_teacher_attention(self.attention_state, teacher, num_classes).to(loader.device)
        self._fill(loader, attention)

    @classmethod
    def from_parts(
        cls,
        teacher: nn.Module,
        loader: DeviceLoader,
        *,
        map_stages: Sequence[int],
        logits: torch.Tensor,
        maps: dict[int, torch.Tensor],
        descriptors: list[torch.Tensor] | None,
        attention_state: dict[str, torch.Tensor] | None,
    ) -> TeacherCache:
        """A cache of ``teacher`` on ``loader``'s data from tensors filled elsewhere (another
        process: `nas_kd.distill.shared_cache`), without a teacher pass. The caller vouches that
        they are this teacher's outputs on these examples and views."""
        if loader.views is None:
            raise ValueError("the loader crops at random: its views cannot be enumerated, so the teacher must run live")
        cache = cls.__new__(cls)
        cache.teacher, cache.views, cache.num_examples = teacher, loader.views, loader.num_examples
        cache.map_stages = tuple(map_stages)
        cache._data, cache._norm = loader.x, (loader.mean, loader.inv_std)
        cache.logits, cache.maps, cache.descriptors, cache.attention_state = logits, dict(maps), descriptors, attention_state
        return cache

    @torch.no_grad()
    def _fill(self, loader: DeviceLoader, attention: nn.Module | None) -> None:
        """One teacher pass per view; row ``view * N + index`` holds example ``index`` in ``view``."""
        self.teacher.eval()
        n, device = self.num_examples, loader.device
        buffers: dict = {}

        def store(key, rows: torch.Tensor, values: torch.Tensor) -> None:
            if key not in buffers:  # allocated on first sight, once the shape is known
                buffers[key] = torch.empty((self.views * n, *values.shape[1:]), dtype=values.dtype, device=device)
            buffers[key][rows] = values.contiguous()

        for view in range(self.views):
            for start in range(0, n, BUILD_BATCH):
                index = torch.arange(start, min(start + BUILD_BATCH, n), device=device)
                x = loader.view(index, flip=view == 1)
                with autocast(device):
                    if self.map_stages or attention is not None:
                        maps, logits = self.teacher.forward_stages(x)
                    else:
                        maps, logits = [], self.teacher(x)
                rows = index + view * n
                store("logits", rows, logits.float())
                for j in self.map_stages:
                    store(j, rows, maps[j].to(MAP_DTYPE))
                if attention is not None:
                    for j, d in enumerate(attention.squeeze(maps)):
                        store(("desc", j), rows, d.float())
        self.logits = buffers["logits"]
        self.maps = {j: buffers[j] for j in self.map_stages}
        self.descriptors = [buffers["desc", j] for j in range(len(self.teacher.stage_channels))] if attention is not None else None

    @property
    def nbytes(self) -> int:
        tensors = [self.logits, *self.maps.values(), *(self.descriptors or [])]
        return sum(t.numel() * t.element_size() for t in tensors)

    def covers(self, mode: Mode) -> bool:
        """Whether this cache holds everything ``mode`` reads from the teacher."""
        return set(cached_map_stages(mode, self.teacher)) <= set(self.map_stages) and (not mode.weights.desc or self.descriptors is not None)

    def matches(self, teacher: nn.Module, loader: DeviceLoader) -> bool:
        """Built for this very teacher and these training examples, views and normalisation."""
        same_data = loader.x is self._data or (loader.x.shape == self._data.shape and torch.equal(loader.x, self._data))
        mean, inv_std = self._norm
        return teacher is self.teacher and loader.views == self.views and same_data and torch.equal(loader.mean, mean) and torch.equal(loader.inv_std, inv_std)

    def lookup(self, index: torch.Tensor, flipped: torch.Tensor, map_stages: Sequence[int], desc_stages: Sequence[int], samples: int | None = None) -> TeacherOutputs:
        """The teacher's outputs for a batch, as `teacher_outputs` would compute them live (maps
        and descriptors for the first ``samples`` examples)."""
        rows = index + flipped.long() * self.num_examples if self.views == 2 else index
        maps = [self.maps[j][rows[:samples]].float() for j in map_stages]
        descriptors = [self.descriptors[j][rows[:samples]] for j in desc_stages] if desc_stages else []
        return TeacherOutputs(self.logits[rows], maps, descriptors)

    @staticmethod
    def estimate_bytes(teacher: nn.Module, loader: DeviceLoader, mode: Mode, input_shape: tuple[int, int, int], num_classes: int) -> int:
        """What a cache for ``mode`` would hold, from a probe pass (no data pass)."""
        views = loader.views or 0
        per_example = 4 * num_classes
        if cached_map_stages(mode, teacher):
            sizes = stage_sizes(teacher, input_shape, loader.device)
            per_example += sum(teacher.stage_channels[j] * sizes[j][0] * sizes[j][1] * MAP_DTYPE.itemsize for j in cached_map_stages(mode, teacher))
        if mode.weights.desc:
            per_example += 4 * sum(teacher.stage_channels)
        return views * loader.num_examples * per_example
