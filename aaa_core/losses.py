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


AE_LOSSES: dict[str, AELoss] = {"ce": ce, "mse": mse, "ce_mse": ce_mse}


def get_loss(name: str) -> AELoss:
    try:
        return AE_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown AE loss {name!r}; expected one of {sorted(AE_LOSSES)}") from None
