"""The process group of a run started by ``torchrun``: the environment it sets, parsed once, and the
few collective operations the trainer needs (a no-op single process otherwise)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..model.extractor import resolve_device


@dataclass(frozen=True)
class TorchrunEnvironment:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them (0, 1, 0 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environ(cls) -> TorchrunEnvironment:
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def device(self, option: str) -> torch.device:
        """The device of this process: ``option`` resolved, and on CUDA under torchrun the local rank's GPU."""
        device = resolve_device(option)
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device


class Distributed:
    """Rank, world size and helpers; a no-op single process when not started by torchrun."""

    def __init__(self, device_option: str):
        environment = TorchrunEnvironment.from_environ()
        self.world_size = environment.world_size
        self.rank = environment.rank
        self.enabled = environment.enabled
        self.device = environment.device(device_option)
        if self.enabled and self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.initialised_here = self.enabled and not dist.is_initialized()
        if self.initialised_here:
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, *flags: bool) -> list[bool]:
        """Element-wise OR of boolean flags over all processes."""
        if not self.enabled:
            return list(flags)
        tensor = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def broadcast(self, value):
        """The main process's ``value`` on every process (nodes need not share a disk)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_gradients(self, parameters) -> None:
        """Average the gradients of parameters that DDP does not hold (a module trained beside the network)."""
        if not self.enabled:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= self.world_size

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
