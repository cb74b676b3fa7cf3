"""Data parallelism with ``torch.distributed`` (launched by ``torchrun``), and nothing else.

``torchrun --nproc-per-node N -m cryohydra reconstruct ...`` starts N processes (ranks) that
each hold the whole model (encoder and volume, wrapped in ``DistributedDataParallel`` so their
gradients are all-reduced) and a fixed shard of the particles, rows ``rank, rank + N, ...``:
each rank reads only its shard's images and owns its shard's rows of the pose table. Whatever
needs all particles (the switch criterion, the global search's reconstruction, the per-epoch
metrics, checkpoints, the output) goes through the collectives here. The backend is ``gloo``
on CPU and ``nccl`` on CUDA; multi-node runs use torchrun's usual rendezvous flags.

A checkpoint always holds the whole pose table in particle order, so a run can resume with
any number of ranks.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Context", "process_group", "shard_batches", "shard_rows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """This process's place in a run: rank and number of ranks (1: no distribution)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over the ranks (in place; complex tensors too)."""
        if self.active:
            target = torch.view_as_real(tensor) if tensor.is_complex() else tensor
            dist.all_reduce(target, op=dist.ReduceOp.SUM)
        return tensor

    def sum_float(self, value: float) -> float:
        if not self.active:
            return value
        return float(self.sum(torch.tensor([value], dtype=torch.float64, device=self._device)))

    @property
    def _device(self) -> torch.device:
        if self.active and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def gather_rows(self, local: torch.Tensor, n_total: int) -> torch.Tensor:
        """The whole ``(n_total, ...)`` tensor in particle order from each rank's shard rows
        ``rank::world_size`` (every rank gets it)."""
        if not self.active:
            return local
        size = -(-n_total // self.world_size)
        padded = torch.zeros((size, *local.shape[1:]), dtype=local.dtype, device=self._device)
        padded[: len(local)] = local.to(self._device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        out = torch.empty((n_total, *local.shape[1:]), dtype=local.dtype, device=self._device)
        for rank, part in enumerate(parts):
            rows = len(range(rank, n_total, self.world_size))
            out[rank :: self.world_size] = part[:rows]
        return out.to(local.device)

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[tuple[Context, torch.device]]:
    """The context of a process started by ``torchrun`` (``WORLD_SIZE`` > 1 in the
    environment), else a single process, for the ``with`` block. On CUDA each rank takes the
    GPU ``LOCAL_RANK``.

    A process group initialised here is destroyed when the block ends, and whatever trained
    with it (an :class:`~cryohydra.inference.train.AbInitio`, its
    ``DistributedDataParallel`` wrappers) must be unreachable by then: do the work in a
    function called inside the block. The reason is gloo's teardown. A wrapper's reducer
    that drops the group's last reference joins gloo's worker threads while holding the
    GIL, and a worker thread that is still freeing a finished collective's tensors needs
    the GIL: the rank hangs. At interpreter exit the same teardown aborts the rank
    ("terminate called without an active exception"). Here the wrappers are collected
    while the group is still registered, and the group itself is dropped by
    ``destroy_process_group``, whose binding releases the GIL.
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Context(), device
        return
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Context(dist.get_rank(), dist.get_world_size()), device
    finally:
        if owned and dist.is_initialized():
            gc.collect()  # wrappers in reference cycles go now, not at exit
            alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
            if alive:
                log.warning(
                    "%d DistributedDataParallel wrapper(s) outlive the process group: "
                    "this rank may hang or abort at exit",
                    alive,
                )
            dist.destroy_process_group()


def shard_rows(n_total: int, context: Context) -> np.ndarray:
    """The particles of this rank: ``rank, rank + world_size, ...``."""
    return np.arange(context.rank, n_total, context.world_size)


def shard_batches(
    n_local: int, n_total: int, batch_size: int, seed: int, epoch: int, context: Context
) -> list[np.ndarray]:
    """This rank's batches of an epoch (indices into its shard, each sorted). Every rank has
    the same number of batches (DistributedDataParallel steps together), of about
    ``batch_size / world_size`` images, so the global batch is ``batch_size`` as in a single
    process."""
    per_rank = -(-batch_size // context.world_size)
    largest_shard = -(-n_total // context.world_size)
    n_batches = max(1, -(-largest_shard // per_rank))
    order = np.random.default_rng([seed, epoch, context.rank]).permutation(n_local)
    return [np.sort(part) for part in np.array_split(order, n_batches)]
