"""Training on many processes with torch.distributed (torchrun): the little the loop needs.

    torchrun --nproc-per-node N -m chargen train ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is
a no-op for one process. NCCL on CUDA, gloo on CPU. Collectives time out
(CHARGEN_DIST_TIMEOUT seconds, default 300) so that a rank that died never
leaves the others waiting forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT_ENV = "CHARGEN_DIST_TIMEOUT"


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return t.tolist()

    def mean(self, value: float) -> float:
        return self.sum([value])[0] / self.world

    def any(self, flag: bool) -> bool:
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def broadcast(self, obj):
        """rank 0's obj on every rank (any picklable object)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's tensor (all the same shape), concatenated along dim in rank order."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def _device(self):
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(use_cuda: bool) -> Dist:
    if not launched_by_torchrun():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300")))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return Dist(rank, world, local_rank)
