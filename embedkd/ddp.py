"""Data-parallel training under `torchrun`: one process per GPU (or CPU process), each with a replica of the
model; PyTorch's DistributedDataParallel averages the gradients. Outside torchrun nothing changes.

Only rank 0 writes (checkpoints, logs, the saved model, the command's output); the others train and wait.
Everything that decides whether a step happens (the time budget, a loss gone non-finite) is agreed by all
ranks, so that no rank waits forever on a collective another rank will not join.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Cluster", "RoundRobinBatches", "agree_max", "from_leader", "start", "stop", "wait_for_leader"]

_PATIENT: Any = None


@dataclass(frozen=True)
class Cluster:
    rank: int
    world: int
    device: torch.device
    patient: Any = None  # a gloo group with a day's timeout (`wait_for_leader`)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start(requested_device: str) -> Cluster:
    """The process group torchrun describes in the environment (NCCL on CUDA, gloo on CPU), or a one-process
    cluster on `requested_device` when not under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Cluster(0, 1, torch.device(requested_device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.device(requested_device).type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    global _PATIENT
    if _PATIENT is None:  # made now, while every rank is here: making a group is itself a collective
        _PATIENT = dist.new_group(backend="gloo", timeout=timedelta(days=1))
    return Cluster(dist.get_rank(), dist.get_world_size(), device, _PATIENT)


def stop(cluster: Cluster) -> None:
    global _PATIENT
    if cluster.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
        _PATIENT = None


def agree_max(cluster: Cluster, values: Sequence[float]) -> list[float]:
    """The largest of each value over all ranks (one small all-reduce): what every rank then acts on."""
    if cluster.world <= 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=cluster.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def from_leader(cluster: Cluster, values: Sequence[float]) -> list[float]:
    """Rank 0's values, on every rank (settings a rank worked out from its own clock, such as a time budget)."""
    if cluster.world <= 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=cluster.device)
    dist.broadcast(t, src=0)
    return t.tolist()


def wait_for_leader(cluster: Cluster) -> None:
    """A barrier that waits up to a day: the other ranks wait while rank 0 prepares what they then read from its
    caches (a cross-encoder teacher scoring a large corpus takes hours, past the usual collective timeout)."""
    if cluster.world > 1:
        dist.barrier(group=cluster.patient)


class RoundRobinBatches:
    """Rank r's share of a batch sampler's batches: r, r + world, r + 2 world, ... Every rank draws the same
    sequence (same seed and epoch) and takes as many batches as every other, so an epoch is one pass over the
    data in total and all ranks step together."""

    def __init__(self, sampler, rank: int, world: int) -> None:
        self.sampler, self.rank, self.world = sampler, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.sampler)
        per_rank = len(batches) // self.world
        yield from batches[self.rank : per_rank * self.world : self.world]

    def __len__(self) -> int:
        return len(self.sampler) // self.world
