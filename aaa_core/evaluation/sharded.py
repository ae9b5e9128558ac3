"""The evaluation protocol's attacks sharded over the processes of a torchrun group, with one process's numbers.

The test subset is cut into the one-process run's batches (``batch_size``), and batch i goes to rank
i mod N. Every random draw is the one-process run's: each rank walks the same seeded generator over every
batch and makes the draw of each batch it skips (a random start costs nothing next to an attack), so batch
i starts from the same point whichever rank attacks it. The per-example results are gathered in example
order on every rank. With one process (no torchrun group) the loops are the plain ones of
``aaa_core.evaluation.flags`` (``robust_flags``, ``transfer_flags``, ``noise_flags``, ``predictions``), batch for batch
and draw for draw: tests/test_sharded.py checks both, and that two gloo processes give the exact flags.
"Exact" assumes every process computes a batch as one process would: the same number of threads per
process on the CPU (torchrun starts each with one), identical GPUs with deterministic kernels on CUDA.

Only the evaluate stage's protocol (``aaa_core.evaluation.protocols``) runs sharded; the adaptive suite, kNN, the eps
sweep and AutoAttack still run in one process.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from aaa_core import distributed
from aaa_core.attacks import PGDConfig, pgd, pgd_until_fooled, random_start_linf
from aaa_core.evaluation.flags import predictions as _predict
from aaa_core.progress import progress
from aaa_core.runtime import generator as make_generator

BATCH = 256   # aaa_core.evaluation.flags's batch size (a test checks they agree): the batches, and so the draws, of one process


def _batches(n: int, batch_size: int, rank: int, world: int) -> Iterator[tuple[int, slice, bool]]:
    """(batch index, its rows, whether this rank attacks it) for every batch of ``n`` rows, in order."""
    for i, start in enumerate(range(0, n, batch_size)):
        yield i, slice(start, start + batch_size), i % world == rank


def _skip_random_start(xb: Tensor, cfg: PGDConfig, generator: torch.Generator) -> None:
    """The draw PGD would make on this batch (``aaa_core.attacks._pgd_loop``), made and dropped."""
    if cfg.random_start and cfg.eps != 0 and cfg.steps != 0:
        random_start_linf(xb, cfg.eps, generator)


def _merge(local: dict[int, Tensor], device: torch.device) -> Tensor:
    """Every rank's {batch index: rows}, concatenated in batch order (moved through the CPU to gather)."""
    parts: dict[int, Tensor] = {}
    for shard in distributed.gather({i: t.cpu() for i, t in local.items()}):
        parts.update(shard)
    return torch.cat([parts[i] for i in sorted(parts)]).to(device)


def _where() -> tuple[int, int]:
    return distributed.rank(), distributed.world_size()


def local_robust_flags(model: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, *, record_at: Sequence[int] = (),
                       seed: int = 0, batch_size: int = BATCH, rank: int = 0,
                       world: int = 1) -> dict[int, dict[int, Tensor]]:
    """This rank's part of ``robust_flags``: {step count: {batch index: never-fooled flags}}."""
    generator = make_generator(seed, x.device)
    steps = sorted({*record_at, cfg.steps})
    flags: dict[int, dict[int, Tensor]] = {k: {} for k in steps}
    for restart in range(cfg.restarts):
        for i, rows, mine in progress(list(_batches(len(x), batch_size, rank, world)),
                                      f"PGD-{cfg.steps} restart {restart + 1}/{cfg.restarts}"):
            xb, yb = x[rows], y[rows]
            if not mine:
                _skip_random_start(xb, cfg, generator)
                continue
            _, recorded = pgd_until_fooled(model, xb, yb, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                                           random_start=cfg.random_start, loss=cfg.loss, generator=generator,
                                           record_at=steps)
            for k in steps:
                flags[k][i] = flags[k][i] & recorded[k] if i in flags[k] else recorded[k]
    return flags


def robust_flags(model: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, *, record_at: Sequence[int] = (),
                 seed: int = 0, batch_size: int = BATCH) -> dict[int, Tensor]:
    """``aaa_core.evaluation.flags.robust_flags`` over the ranks: per-example "never fooled" flags after each step
    count in ``record_at`` (and ``cfg.steps``), robust only if it survives every restart."""
    rank, world = _where()
    local = local_robust_flags(model, x, y, cfg, record_at=record_at, seed=seed, batch_size=batch_size,
                               rank=rank, world=world)
    return {k: _merge(by_batch, x.device) for k, by_batch in local.items()}


def local_transfer_flags(source: nn.Module, target: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, *,
                         seed: int = 0, batch_size: int = BATCH, rank: int = 0, world: int = 1) -> dict[int, Tensor]:
    generator = make_generator(seed, x.device)
    out: dict[int, Tensor] = {}
    for i, rows, mine in _batches(len(x), batch_size, rank, world):
        xb, yb = x[rows], y[rows]
        if not mine:
            _skip_random_start(xb, cfg, generator)
            continue
        x_adv = pgd(source, xb, yb, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps, random_start=cfg.random_start,
                    loss=cfg.loss, generator=generator)
        out[i] = _predict(target, x_adv, batch_size) == yb
    return out


def transfer_flags(source: nn.Module, target: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, *, seed: int = 0,
                   batch_size: int = BATCH) -> Tensor:
    """``aaa_core.evaluation.flags.transfer_flags`` over the ranks: PGD (final iterate) crafted on ``source``, scored
    on ``target``."""
    rank, world = _where()
    return _merge(local_transfer_flags(source, target, x, y, cfg, seed=seed, batch_size=batch_size, rank=rank,
                                       world=world), x.device)


def local_predictions(model: nn.Module, x: Tensor, *, batch_size: int = BATCH, rank: int = 0,
                      world: int = 1) -> dict[int, Tensor]:
    return {i: _predict(model, x[rows], batch_size) for i, rows, mine in _batches(len(x), batch_size, rank, world)
            if mine}


def predictions(model: nn.Module, x: Tensor, batch_size: int = BATCH) -> Tensor:
    """``aaa_core.evaluation.flags.predictions`` over the ranks: the predicted class of every input."""
    rank, world = _where()
    return _merge(local_predictions(model, x, batch_size=batch_size, rank=rank, world=world), x.device)


def noise_flags(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, seed: int = 0) -> Tensor:
    """``aaa_core.evaluation.flags.noise_flags`` over the ranks: the noise is drawn whole on every rank (as one process
    draws it), each rank scores its batches."""
    generator = make_generator(seed, x.device)
    noise = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    return predictions(model, (x + noise).clamp(0, 1)) == y
