"""torchrun: this process's place in a multi-process training job (README, "Scaling out")."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .runtime import pick_device


@dataclass
class Dist:
    """This process's place in a torchrun job; rank 0 of 1 when not distributed."""
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(tensor)
        return tensor

    def max(self, value: float, device) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return float(tensor)

    def from_rank0(self, value):
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device_name: str, batch_size: int) -> tuple[Dist, torch.device]:
    """One process: (Dist(), the device asked for). Under torchrun: join the group (NCCL on GPUs, gloo on
    CPUs) and take this rank's GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), pick_device(device_name)
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    dist = Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())
    if batch_size % dist.world:
        raise ConfigError(f"--batch-size {batch_size} must be a multiple of the {dist.world} processes")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return dist, device
    return dist, torch.device("cpu")
