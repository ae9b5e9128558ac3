"""Typed, strict view of params.yaml: unknown, missing or mistyped keys fail with the key's full name.

This is the only module that reads params.yaml. A value is resolved per dataset and per scale:
``threat.<dataset>`` holds the paper's attack, ``scales.<scale>.<dataset>`` the budgets.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

AE_LOSSES = ("ce", "mse", "ce_mse")
SCALES = ("cpu", "paper", "smoke")


class ParamsError(ValueError):
    """A params file that does not match what the project expects."""


@dataclass(frozen=True)
class DataConfig:
    user_dir: str          # folder holding the dataset's raw files; "" = none
    offline_dir: str       # where the setup command unpacks the offline fallbacks
    download: bool         # try the official download before the offline fallback


@dataclass(frozen=True)
class ThreatConfig:
    eps: float
    alpha: float
    eval_steps: list[int]  # PGD step counts reported in the tables, e.g. [40, 200]


@dataclass(frozen=True)
class ScaleConfig:
    train_subset: int        # training images for natural training (0 = all)
    adv_epoch_images: int    # images drawn at random per epoch of adversarial training, AE and Madry (0 = all)
    val_size: int            # held out from the training split, for the learning-rate schedule
    batch_size: int
    lr: float
    lr_patience: int         # epochs without val improvement before the learning rate is halved
    latent_dim: int          # MNIST AE latent size (the paper's text: 128, its Table 11: 1024)
    ae_width: float          # channel multiplier of the Fashion-MNIST / CIFAR-10 AEs (1.0 = the paper's)
    augment: bool            # random crop (pad 4) and horizontal flip of training batches (CIFAR-10)
    classifier_epochs: int
    adv_epochs: int          # Madry adversarial training of the baseline classifier
    adv_eps_ramp: int        # Madry training: iterations over which eps grows linearly from 0 (0 = none)
    ae_epochs: int
    train_steps: int         # PGD steps of the training attack
    train_alpha: float       # PGD step size of the training attack
    train_bf16: bool         # bfloat16 autocast in all training (natural and adversarial); evaluation is float32
    eval_subset: int         # test images attacked (0 = the full test set)
    eval_restarts: int
    sanity_subset: int
    sanity_eps: float
    sanity_alpha: float
    sanity_steps: int
    sanity_max_acc: float    # robust accuracy at sanity_eps must be at most this
    transfer_tolerance: float  # white-box may be weaker than transfer by at most this (accuracy, 0..1)
    sweep_eps: list[float]
    sweep_subset: int
    sweep_steps: int
    # constructor arguments per classifier arch, e.g. {resnet: {widen: 1}}: a smaller model at cpu scale,
    # named with its arguments in every table (may be omitted: the paper's sizes)
    classifier_kwargs: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class SuiteBudget:
    """The adaptive-attack suite (stage ``robustness``); its eps and paper protocol come from ``threat``."""
    subset: int               # first test images attacked (0 = the full test set)
    pgd_steps: int            # PGD with restarts, cross-entropy and margin loss
    pgd_alpha: float
    pgd_restarts: int
    apgd_steps: int           # APGD-CE and APGD-T iterations (AutoAttack's standard: 100)
    apgdt_targets: int        # APGD-T target classes (AutoAttack's standard: 9)
    square_queries: int       # Square attack query budget per example
    transfer_steps: int       # PGD steps of the transfer attacks, crafted on the source model
    curve_eps: list[float]    # accuracy against eps (PGD-curve_steps, step 2.5 * eps / steps); must fall to ~0
    curve_steps: int
    max_acc_at_high_eps: float
    masking_tolerance: float  # query-only / transfer may beat the best white-box attack by at most this
    # pipelines (stage names, e.g. ae_ce-dnn) whose masked gradients were seen, investigated and are
    # reported: their masking check is reported loudly instead of failing the stage; any other fails it
    acknowledged_masking: list[str] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class KNNBudget:
    """kNN latent reconstruction (stage knn_eval): test subset, neighbours, BPDA check tolerance."""
    subset: int               # first test images (0 = the full test set)
    k: int                    # neighbours averaged (the paper: 10)
    bpda_tolerance: float     # the BPDA attack may be weaker than the non-adaptive one by at most this


@dataclass(frozen=True)
class Params:
    seed: int
    scale: str
    loss: str
    data: DataConfig
    threat: dict[str, ThreatConfig]
    scales: dict[str, dict[str, ScaleConfig]]
    suite: dict[str, dict[str, SuiteBudget]]   # suite.<scale>.<dataset>
    knn: dict[str, dict[str, KNNBudget]] = dataclasses.field(default_factory=dict)  # knn.<scale>.<dataset>

    def budget(self, dataset: str) -> ScaleConfig:
        """The budgets of ``dataset`` at the selected scale."""
        try:
            return self.scales[self.scale][dataset]
        except KeyError:
            raise ParamsError(f"params: no scales.{self.scale}.{dataset} section") from None

    def suite_budget(self, dataset: str) -> SuiteBudget:
        try:
            return self.suite[self.scale][dataset]
        except KeyError:
            raise ParamsError(f"params: no suite.{self.scale}.{dataset} section") from None

    def knn_budget(self, dataset: str) -> KNNBudget:
        try:
            return self.knn[self.scale][dataset]
        except KeyError:
            raise ParamsError(f"params: no knn.{self.scale}.{dataset} section") from None

    def attack(self, dataset: str) -> ThreatConfig:
        try:
            return self.threat[dataset]
        except KeyError:
            raise ParamsError(f"params: no threat.{dataset} section") from None


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"params: {where} must be a mapping, got {value!r}")
        _, inner = get_args(hint)
        return {k: _convert(v, inner, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"params: {where} must be a list, got {value!r}")
        (inner,) = get_args(hint)
        return [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        # PyYAML reads 1e-3 as a string; accept it as the number it plainly is.
        if isinstance(value, str) and _FLOAT.match(value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"params: {where} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"params: {where} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"params: {where} must be true or false, got {value!r}")
        return value
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ParamsError(f"params: {where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type hint {hint} at {where}")


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {where or 'the file'} must be a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ParamsError(f"params: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"expected {', '.join(sorted(names))}")
    optional = {f.name for f in fields(cls)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    missing = sorted(names - set(raw) - optional)
    if missing:
        raise ParamsError(f"params: missing key(s) {', '.join(prefix + k for k in missing)}")
    return cls(**{k: _convert(raw[k], hints[k], prefix + k) for k in names if k in raw})


def parse_params(raw: dict) -> Params:
    params = _build(Params, raw, "")
    if params.scale not in params.scales:
        raise ParamsError(f"params: scale must be one of {sorted(params.scales)}, got {params.scale!r}")
    if params.loss not in AE_LOSSES:
        raise ParamsError(f"params: loss must be one of {list(AE_LOSSES)}, got {params.loss!r}")
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {err}") from None
    try:
        return parse_params(raw)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
