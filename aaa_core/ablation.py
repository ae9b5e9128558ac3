"""Training variants the paper leaves open, measured on MNIST before any becomes a default (ablations/dvc.yaml).

Two knobs of AE training: a warm start of N epochs of clean reconstruction before adversarial training
(what ZO-AE-DS does; the black-box study already uses one), and the weight of the MSE term in L_ce+mse
(L = ce + weight * mse: at weight 1 the per-pixel MSE, 0.003-0.05, is about 1% of the loss, so L_ce+mse
behaves like L_ce). Each variant is the study's AE with one change, trained at the study's budget and
seed, so it pairs with the study's model batch for batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


import torch.nn.functional as F
import yaml
from torch import Tensor

from aaa_core.config import ParamsError, Positive, Size, _build
from aaa_core.losses import AELoss




@dataclass(frozen=True)
class VariantConfig:
    warm_epochs: Size      # epochs of clean reconstruction before adversarial training (0 = none, the study's)
    mse_weight: Positive   # L = ce + mse_weight * mse (1 = the study's L_ce+mse)


def weighted_ce_mse(weight: float) -> AELoss:
    """L_ce + weight * L_mse on the same terms as aaa_core.losses (weight 1 is its ce_mse, exactly)."""
    def loss(logits: Tensor, y: Tensor, recon: Tensor, x_clean: Tensor) -> Tensor:
        return F.cross_entropy(logits, y) + weight * F.mse_loss(recon, x_clean)
    return loss


def load_variants(path: str | Path, dataset: str) -> dict[str, VariantConfig]:
    """Every variant of ``<dataset>`` in the ablations params file, checked like params.yaml: an unknown,
    missing, mistyped or out-of-range key stops the stage with one line naming file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {getattr(err, 'problem', None) or err}") from None
    try:
        if not isinstance(raw, dict) or not isinstance(raw.get(dataset), dict) or not raw[dataset]:
            raise ParamsError(f"params: no {dataset} section of variants")
        return {name: _build(VariantConfig, spec, f"{dataset}.{name}") for name, spec in raw[dataset].items()}
    except ParamsError as err:
        raise ParamsError(f"{path}: {str(err).removeprefix('params: ')}") from None
