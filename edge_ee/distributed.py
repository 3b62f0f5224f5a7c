"""Scale-out of the statistics passes on torch.distributed (started by `torchrun`).

Every statistics pass is a sum over samples (class sums, counts, squared norms, scatter),
so each process accumulates its shard (a `DistributedSampler` over the data) and the
partial sums are all-reduced: the result equals the single-process pass within float64
rounding. gloo serves CPU processes, nccl GPU ones; rank 0 writes files.

`init_from_env()` joins the group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, …)
and is a no-op in a plain single process.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from edge_ee.errors import ConfigError

log = logging.getLogger(__name__)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def init_from_env(device: str = "cpu", expected_world_size: int | None = None) -> bool:
    """Join torchrun's process group if its environment is set; True when distributed."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        if expected_world_size not in (None, 1):
            raise ConfigError(f"expected {expected_world_size} processes but this is a single "
                              "process; start it with torchrun --nproc-per-node N")
        return False
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process")
    if not active():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        log.info("joined process group: rank %d of %d (%s)", rank(), world_size(), backend)
    if expected_world_size is not None and world_size() != expected_world_size:
        raise ConfigError(f"torchrun started {world_size()} processes but {expected_world_size} "
                          "were expected; pass the same --nproc-per-node")
    return True


def shutdown() -> None:
    """Leave the process group (call once at the end of a torchrun script)."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all processes in place (float64 sums stay float64)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
