"""Data-parallel runs with torch.distributed: who this process is, and the few collectives the pipeline needs.

`torchrun --nproc_per_node N -m polydistill run RECIPE` (or `distill run --nproc N RECIPE`, the same through torch's
launcher) starts N copies of the same run. Each joins the process group (`join_from_env`: NCCL on GPUs, gloo on CPU)
and runs every training stage on its shard of each global batch (`distill.train.fit` wraps the model in
DistributedDataParallel); only rank 0 writes files (`distill.io` writes nothing on other ranks) and prints.
Nothing here communicates by itself: it is torch.distributed's process group, queried where needed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported lazily: `distill.io` asks `is_main()` from command-line paths that must not load torch


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank `rank` of `size`, training on `device` (its GPU when the machine has
    GPUs, `cuda:LOCAL_RANK`; else the CPU)."""

    rank: int = 0
    size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist() -> Any:
    """torch.distributed if torch has been imported and a process group is up; else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return None
    return dist


def world() -> World:
    """The process group this process belongs to (rank 0 of 1 when there is none)."""
    dist = _dist()
    if dist is None:
        return World(device=_device() if "torch" in sys.modules else "cpu")
    return World(rank=dist.get_rank(), size=dist.get_world_size(), device=_device())


def _device() -> str:
    import torch  # lazy: keeps distill --help, --version free of torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def is_main() -> bool:
    return world().main


def join_from_env() -> World:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1), once; else rank 0 of 1."""
    import torch  # lazy: keeps distill --help, --version free of torch
    import torch.distributed as dist  # lazy: as above

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist() is not None:
        return world()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # rank 0 alone writes the teacher cache or scores dev sets while the others wait: give it hours, not
    # the default 10 (NCCL) or 30 (gloo) minutes
    dist.init_process_group(backend, timeout=timedelta(hours=6))
    return world()


def leave() -> None:
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()


def barrier() -> None:
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def from_main(value: object) -> object:
    """Rank 0's `value` on every rank (e.g. the run directory rank 0 created)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over all ranks (a copy; `value` itself is unchanged)."""
    total = value.detach().clone()
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.all_reduce(total)
    return total


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Average the gradients of parameters DDP does not own (a loss's learned projections) over ranks."""
    dist = _dist()
    size = dist.get_world_size() if dist is not None else 1
    if size == 1:
        return
    for param in parameters:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= size


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. computes and writes the teacher cache); the others then run it
    (and find the result on disk)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
