"""How many torch threads a CPU job should use on a machine that other jobs may share."""

from __future__ import annotations

import os

__all__ = ["cpu_threads", "set_torch_threads"]


def cpu_threads() -> int:
    """OMP_NUM_THREADS where it is set (by the user, or by torchrun for its processes); else this process's
    share of the cores (torchrun's processes on one machine share them) on an idle machine, and one when other
    jobs already load every core (measured on a 2-core machine: with both cores busy, 1 thread trains 2.5x
    faster than 2 that fight for them; two torchrun processes of 2 threads each trained ReID 4x slower than
    of 1, docs/reid.md)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores else max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def set_torch_threads(requested: int | None = None) -> int:
    """Set torch's CPU threads to `requested`, or to `cpu_threads()`; a no-op choice on CUDA machines
    (the GPU does the work). Returns the thread count in force."""
    import torch

    if requested:
        torch.set_num_threads(requested)
    elif not torch.cuda.is_available():
        torch.set_num_threads(cpu_threads())
    return torch.get_num_threads()
