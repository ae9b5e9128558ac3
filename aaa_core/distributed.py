"""Several processes, one training: PyTorch's own engine (torchrun + DistributedDataParallel), or none.

A stage started with ``devices: N`` > 1 re-executes itself under ``torchrun --standalone --nproc_per_node=N``
(``relaunch``); each process then joins the group (``init``: NCCL on GPUs, one GPU per process, gloo on the
CPU). In the training loop every global batch is split over the ranks (``shard``), the trained module is
wrapped in ``DistributedDataParallel`` (``wrap``; BatchNorm becomes SyncBatchNorm), losses and validation
metrics are averaged over ranks (``mean``) so the learning-rate schedule steps identically everywhere, and
only rank 0 writes (``is_main``). With one process every function here is the identity.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aaa_core import CHAIN_ENV

TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"   # set by torchrun in every process it starts


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def relaunch(devices: int, module: str) -> None:
    """Re-execute this stage (``python -m module`` with the same arguments) under torchrun with ``devices``
    processes; returns at once when ``devices`` is 1 or this process already runs under torchrun. Inside a
    chain of stages (``stages.chain``) torchrun runs as a child process and ``SystemExit`` carries its exit
    status back to the chain, which goes on with its next stage."""
    if devices <= 1 or os.environ.get(TORCHRUN_ENV):
        return
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
            "-m", module, *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get(CHAIN_ENV):
        env = {k: v for k, v in os.environ.items() if k != CHAIN_ENV}
        raise SystemExit(subprocess.call(args, env=env))
    os.execv(sys.executable, args)


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun set up (if any); returns this process's device: with CUDA, the GPU of
    its local rank (``device`` names the first), else ``device``."""
    if not os.environ.get(TORCHRUN_ENV) or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", (device.index or 0) + int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return device


def shard(batch: Tensor) -> Tensor:
    """This rank's part of a global batch of indices (every rank's part, together, is the batch)."""
    return batch[rank()::world_size()] if active() else batch


def wrap(model: nn.Module) -> nn.Module:
    """``model`` for the training step: under DDP, wrapped (gradients averaged over ranks at backward); the
    caller keeps ``model`` itself for everything but the training forward.

    On GPUs its BatchNorm layers become SyncBatchNorm (statistics over the global batch), in place, so the
    ``model`` saved afterwards is that one. PyTorch's SyncBatchNorm runs on GPUs only: on the CPU (gloo) each
    rank normalises with its shard's statistics and DDP broadcasts rank 0's running statistics.
    """
    if not active():
        return model
    device = next(model.parameters()).device
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)   # converts the children in place
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def mean(value: float) -> float:
    """The mean of ``value`` over ranks (itself with one process)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.item() / world_size()


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order ([obj] with one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not active():
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_rows(*tensors: Tensor) -> Sequence[Tensor]:
    """This rank's contiguous slice of each tensor's rows (the same split for all of them)."""
    if not active():
        return tensors
    n = len(tensors[0])
    lo, hi = n * rank() // world_size(), n * (rank() + 1) // world_size()
    return tuple(t[lo:hi] for t in tensors)
