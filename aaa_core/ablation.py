"""The ablation pipeline's variants (ablations.yaml): values of the AE's two training knobs, params.yaml's
``ae.<dataset>.warm_epochs`` and ``mse_weight``, each trained by the study's train_ae at its budget and seed,
so it pairs with the study's model batch for batch (ablations/dvc.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


import yaml

from aaa_core.config import ParamsError, Positive, Size, _build




@dataclass(frozen=True)
class VariantConfig:
    warm_epochs: Size      # epochs of clean reconstruction before adversarial training (0 = none)
    mse_weight: Positive   # L = ce + mse_weight * mse (1 = the paper's L_ce+mse)


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
