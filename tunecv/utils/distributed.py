"""Several processes (GPUs, machines) on torch.distributed, launched by torchrun: process group, DDP, reductions.

One process per GPU (or per CPU share with gloo). torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them a
run is a single process and every function here is a no-op.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from timm.layers import convert_sync_batchnorm
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tunecv.errors import UserError

logger = logging.getLogger(__name__)

LAUNCH_HINT = "torchrun --nproc_per_node N finetune.py --config X (see docs/distributed.md)"


def launched() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_world_size() -> int:
    """Processes torchrun started on this machine (LOCAL_WORLD_SIZE), 1 without torchrun."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return max(1, int(value)) if value.isdigit() else 1


def init(required: bool, device_name: str) -> torch.device | None:
    """Join the process group when torchrun launched this process: nccl on CUDA, gloo on the CPU. Returns this
    process's GPU (cuda:LOCAL_RANK), or None when it is not distributed or runs on the CPU."""
    if not launched():
        if required:  # MindCV's configs all say so: they run on one device as they are
            logger.warning("distribute: true, but this process was not launched by torchrun, so it trains alone; "
                           "for several GPUs run %s", LAUNCH_HINT)
        return None
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name == "cuda" and not cuda:
        raise UserError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    device = None
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # naming the GPU (torch >= 2.3) spares NCCL a guess that can hang on an unusual rank-to-GPU mapping
        named = {"device_id": device} if cuda and "device_id" in inspect.signature(
            dist.init_process_group).parameters else {}
        dist.init_process_group("nccl" if cuda else "gloo", **named)
    return device


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def is_main() -> bool:
    return rank() == 0


def shutdown() -> None:
    if enabled():
        dist.destroy_process_group()


def barrier() -> None:
    if enabled():
        dist.barrier()


def sum_all(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the processes (float64, so counts stay exact)."""
    if not enabled():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(tensor)
    return tensor.tolist()


def max_all(value: int, device: torch.device) -> int:
    """The largest of the processes' `value`s, on every process (a signal any of them caught: all stop alike)."""
    if not enabled():
        return value
    tensor = torch.tensor([value], device=_comm_device(device))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def gather(value: Any) -> list[Any]:
    """Every process's `value` (picklable), in rank order."""
    if not enabled():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every process (a run name, an error found on rank 0)."""
    if not enabled():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process. DDP sends them at the start of each
    training forward, so after the last step each process holds its own: validation, each process on its share,
    would score the shares with different models, and `_best` holds rank 0's."""
    if not enabled():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def _comm_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the parameters that train now: built again whenever a phase (un)freezes
    layers, since DDP registers its gradient hooks once."""
    if not enabled():
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def sync_batchnorm(model: nn.Module, requested: bool, device: torch.device) -> nn.Module:
    """BatchNorm statistics over the global batch (`sync_bn`): CUDA processes only, as SyncBatchNorm is."""
    if not requested:
        return model
    if not enabled():
        logger.warning("sync_bn: a single process has nothing to synchronise; ignored")
        return model
    if device.type != "cuda":
        raise UserError("sync_bn needs CUDA (SyncBatchNorm); remove sync_bn for CPU runs")
    return convert_sync_batchnorm(model)  # timm's: keeps the activation of timm's BatchNormAct2d
