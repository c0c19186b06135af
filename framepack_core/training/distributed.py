"""Data parallelism over processes with torch.distributed: ``torchrun --nproc_per_node N`` runs the same command.

Each process computes its shard of every step's batch; ``DistributedDataParallel`` averages the gradients, so the
step equals one process with the whole batch. Without torchrun's environment (``WORLD_SIZE``), nothing is
initialised and the helpers act for a single process.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_processes() -> Processes:
    """Join torchrun's process group (NCCL on GPUs, gloo on the CPU), or a single process without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    processes = Processes(dist.get_rank(), dist.get_world_size(), device)
    log.info("process %d of %d on %s", processes.rank, processes.world_size, device)
    return processes


def wrap(module: torch.nn.Module, processes: Processes) -> torch.nn.Module:
    """DDP over the trainable parameters; the frozen base weights (the same file on every rank) are not broadcast."""
    if not processes.distributed:
        return module
    frozen = [name for name, param in module.named_parameters() if not param.requires_grad]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
    device_ids = [processes.device.index] if processes.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def mean_over_processes(value: float, processes: Processes) -> float:
    if not processes.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=processes.device)
    dist.all_reduce(tensor)
    return float(tensor) / processes.world_size


def any_process(flag: bool, processes: Processes) -> bool:
    """True on every process when it is true on one (e.g. a time limit reached: all must stop at the same step)."""
    return mean_over_processes(float(flag), processes) > 0


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()


def shard(keys: list, processes: Processes) -> list:
    """This process's contiguous share of a step's sample keys (the batch size divides evenly, checked before)."""
    size = len(keys) // processes.world_size
    return keys[processes.rank * size:(processes.rank + 1) * size]
