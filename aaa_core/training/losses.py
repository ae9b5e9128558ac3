"""AE objectives of the paper: L_ce on the frozen classifier's output, L_mse to the clean image, or their sum."""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

AELoss = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def ce(logits: Tensor, y: Tensor, recon: Tensor, x_clean: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def mse(logits: Tensor, y: Tensor, recon: Tensor, x_clean: Tensor) -> Tensor:
    return F.mse_loss(recon, x_clean)


def ce_mse(logits: Tensor, y: Tensor, recon: Tensor, x_clean: Tensor) -> Tensor:
    return ce(logits, y, recon, x_clean) + mse(logits, y, recon, x_clean)


def weighted_ce_mse(weight: float) -> AELoss:
    """L_ce + weight * L_mse (weight 1 is ``ce_mse`` exactly). At weight 1 the per-pixel MSE (0.003-0.05) is
    about 1% of the loss, so L_ce+mse behaves like L_ce; a larger weight keeps the AE a reconstructor."""
    if weight == 1.0:
        return ce_mse

    def loss(logits: Tensor, y: Tensor, recon: Tensor, x_clean: Tensor) -> Tensor:
        return ce(logits, y, recon, x_clean) + weight * mse(logits, y, recon, x_clean)
    return loss


AE_LOSSES: dict[str, AELoss] = {"ce": ce, "mse": mse, "ce_mse": ce_mse}


def get_loss(name: str, mse_weight: float = 1.0) -> AELoss:
    """The AE loss ``name``; ``mse_weight`` weighs the MSE term of ``ce_mse`` (the other losses ignore it)."""
    try:
        base = AE_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown AE loss {name!r}; expected one of {sorted(AE_LOSSES)}") from None
    return weighted_ce_mse(mse_weight) if name == "ce_mse" else base
