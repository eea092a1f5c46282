"""Process-group handling for single-device and ``torchrun`` (DDP) training."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Join the ``torchrun`` process group if the environment names one (gloo on CPU, NCCL on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistContext(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def gather_with_local_grad(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Concatenate ``tensor`` (B, D) from every rank in rank order; only this rank's slice keeps its gradient."""
    if context.world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(context.world)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[context.rank] = tensor
    return torch.cat(parts)


def all_true(flag: bool, context: DistContext) -> bool:
    """Return True only if ``flag`` is True on every rank (so that all ranks stop together)."""
    if context.world == 1:
        return flag
    value = torch.tensor([1 if flag else 0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def barrier(context: DistContext) -> None:
    """Wait for every rank."""
    if context.world > 1:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    """Leave the process group."""
    if context.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
