"""Summing metric state across processes; a no-op unless `torch.distributed` is initialised with several ranks."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensors: list[Tensor]) -> list[Tensor]:
    """Element-wise sums of `tensors` over all ranks (copies, in one collective); the tensors themselves when alone.

    Every rank must call this with tensors of the same shapes. Counts travel as float64, exact below 2**53.
    """
    if not is_distributed():
        return [tensor.clone() for tensor in tensors]
    # NCCL only reduces CUDA tensors; gloo and the others take CPU tensors.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = torch.cat([tensor.reshape(-1).to(device=device, dtype=torch.float64) for tensor in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    reduced, start = [], 0
    for tensor in tensors:
        chunk = flat[start : start + tensor.numel()]
        reduced.append(chunk.reshape(tensor.shape).to(device=tensor.device, dtype=tensor.dtype))
        start += tensor.numel()
    return reduced


def all_gather_objects(obj: Any) -> list[Any]:
    """`[obj of rank 0, obj of rank 1, ...]` (picklable objects); `[obj]` when alone."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
