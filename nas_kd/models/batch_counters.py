"""Batch-norm layers without their ``num_batches_tracked`` counter, for what trains every step.

Why: in training, every PyTorch batch-norm layer adds 1 to an int64 counter at each forward: one
op, hence one kernel launch on a GPU, per layer per step. The counter is read only when
``momentum`` is None (a cumulative moving average), which nothing here uses: the running
statistics are updated with momentum 0.1 either way, bit for bit the same. A tiny student's GPU
step is bound by its launches (docs/BENCHMARKS.md, the first GPU session: 12% device-busy), and
the counters are 18 of the 111 ops of the 0.48M student's forward, 24 of a `full` step's 704
(`python -m bench.step_ops`).

What: the counter buffer becomes None (so a state_dict has no such key and the forward skips the
add), and a load hook drops the key from state_dicts saved before, so an older ``winner.pt`` or
``student.pt`` still loads strictly. Teachers keep theirs: they are frozen (in eval mode the counter
never moves) and their buffers are part of the shared teacher cache's fingerprint.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["without_batch_counters", "COUNTER"]

COUNTER = "num_batches_tracked"


def without_batch_counters(module: nn.Module) -> nn.Module:
    """``module`` with the counter removed from every batch-norm layer in it whose momentum is
    set (one without momentum needs the counter: left alone); returns ``module``."""
    for m in module.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.momentum is not None and getattr(m, COUNTER, None) is not None:
            m.register_buffer(COUNTER, None)
            m._register_load_state_dict_pre_hook(_drop_saved_counter)
    return module


def _drop_saved_counter(state_dict, prefix, *_args) -> None:
    # A state_dict saved with the counter (or a legacy one, which BN's own loader fills in with
    # a zero counter before this hook runs): the key has no buffer to load into any more.
    state_dict.pop(prefix + COUNTER, None)
