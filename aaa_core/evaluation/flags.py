"""Accuracy, robust accuracy under PGD, transfer attacks and the sanity checks that fail a stage.

Everything works on tensors of a fixed test subset and returns per-example flags, so worst cases over
restarts or attacks are an AND of flags. Evaluation runs in float32 with models in eval mode, on the device
of its inputs (the flags stay there too).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from aaa_core.attacks import PGDConfig, pgd, pgd_until_fooled
from aaa_core.progress import progress
from aaa_core.runtime import attack_seed
from aaa_core.runtime import generator as make_generator

# Accuracies are float32 means of flags: 5 of 100 reads 0.0500000007, so a check at exactly its threshold
# (accuracy <= 0.05) would fail. Every threshold comparison allows this much rounding, far below one example.
ROUNDING = 1e-6


@torch.no_grad()
def predictions(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """The predicted class of every input."""
    return torch.cat([model(xb).argmax(1) for xb in x.split(batch_size)])


def correct_flags(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> Tensor:
    return predictions(model, x, batch_size) == y


def robust_flags(model: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, *, record_at: Sequence[int] = (),
                 seed: int = 0, batch_size: int = 256) -> dict[int, Tensor]:
    """Per-example "never fooled" flags after each step count in ``record_at`` (and ``cfg.steps``).

    An example counts as robust only if it survives every one of ``cfg.restarts`` random starts.
    """
    generator = make_generator(seed, x.device)
    steps = sorted({*record_at, cfg.steps})
    flags = {k: torch.ones(len(x), dtype=torch.bool, device=x.device) for k in steps}
    for restart in range(cfg.restarts):
        for start in progress(range(0, len(x), batch_size), f"PGD-{cfg.steps} restart {restart + 1}/{cfg.restarts}"):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            _, recorded = pgd_until_fooled(model, xb, yb, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                                           random_start=cfg.random_start, loss=cfg.loss,
                                           generator=generator, record_at=steps)
            for k in steps:
                flags[k][start:start + batch_size] &= recorded[k]
    return flags


def transfer_flags(source: nn.Module, target: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, *,
                   seed: int = 0, batch_size: int = 256) -> Tensor:
    """Craft PGD (final iterate) on ``source``, score on ``target``: per-example "target still correct"."""
    generator = make_generator(seed, x.device)
    out = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        x_adv = pgd(source, xb, yb, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                    random_start=cfg.random_start, loss=cfg.loss, generator=generator)
        out.append(correct_flags(target, x_adv, yb, batch_size))
    return torch.cat(out)


def noise_flags(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, seed: int = 0) -> Tensor:
    """Uniform noise in the same L-inf ball: what an attack must do much better than."""
    generator = make_generator(seed, x.device)
    noise = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    return correct_flags(model, (x + noise).clamp(0, 1), y)


def precision_gap(model: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, *, seed: int = 0) -> dict:
    """Accuracy under the same PGD run in float32 and under bfloat16 autocast (the training attack's format).

    Training may use bfloat16 only if its attack is not weaker: a bf16 accuracy well above the float32 one
    would mean the AE was trained against a softer adversary than the one it is evaluated against.
    """
    result = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        generator = make_generator(seed, x.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=enabled):
            x_adv = pgd(model, x, y, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                        random_start=cfg.random_start, loss=cfg.loss, generator=generator)
        result[f"accuracy_{name}_attack"] = correct_flags(model, x_adv.float(), y).float().mean().item()
    return result


def eps_sweep(model: nn.Module, x: Tensor, y: Tensor, eps_values: Sequence[float], *, steps: int,
              seed: int = 0) -> list[dict]:
    """Robust accuracy at each eps, PGD with Madry's step rule alpha = 2.5 * eps / steps."""
    points = []
    for eps in eps_values:
        cfg = PGDConfig(eps=eps, alpha=2.5 * eps / steps, steps=steps)
        acc = robust_flags(model, x, y, cfg, seed=attack_seed(seed, f"sweep-eps{eps:g}"))[steps].float().mean().item()
        points.append({"eps": eps, "alpha": cfg.alpha, "accuracy": acc})
    return points
