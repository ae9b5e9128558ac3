"""Typed, strict, range-checked view of params.yaml.

This is the only module that reads params.yaml. The file has one section per kind of stage (``split``,
``train``, ``classifier``, ``models``, ``adversarial``, ``ae``, ``evaluate``, ``sweep``,
``suite``, ``knn``, ``certify``), each per dataset, holding the default
(``cpu``) scale's values; ``scales.<scale>`` overlays the keys another scale changes.
``Params.section(name, dataset)`` gives the merged, validated values of the selected scale. Every scale is
validated when the file is loaded, so a bad value at the paper scale is caught on a cpu run too. An unknown,
missing, mistyped or out-of-range key stops the stage with its full name, its value and what was expected.
"""
from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Iterator, Sequence, get_args, get_origin, get_type_hints

import yaml

from aaa_core import DATASET_SIZES  # (train, test, classes) of each dataset: aaa_core.DATASET_FACTS
from aaa_core.errors import AAAError

AE_LOSSES = ("ce", "mse", "ce_mse")
DEVICE_NAMES = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
SCALES = ("cpu", "paper", "smoke")


class ParamsError(AAAError):
    """A params file that does not match what the project expects."""


@dataclass(frozen=True)
class Range:
    """Allowed interval of a number; ``None`` = unbounded."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def holds(self, value: float) -> bool:
        above = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        return above and (self.hi is None or value <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"


NON_EMPTY = "non-empty"
Count = Annotated[int, Range(1)]            # steps, epochs, batch sizes, restarts: at least 1
Size = Annotated[int, Range(0)]             # subsets and image counts: 0 means "all"
Positive = Annotated[float, Range(0, lo_open=True)]
Step = Annotated[float, Range(0, 1, lo_open=True)]      # eps and step sizes, pixels in [0, 1]
Fraction = Annotated[float, Range(0, 1)]                # accuracies and tolerances
Probe = Annotated[float, Range(0, 1)]                   # an eps of a sweep or curve (0 = natural accuracy)


@dataclass(frozen=True)
class DataConfig:
    user_dir: str          # folder holding the dataset's raw files; "" = none
    offline_dir: str       # where the setup command unpacks the offline fallbacks
    download: bool         # try the official download before the offline fallback
    train_images: Size = 0   # training images kept, the first of the set (0 = all)
    test_images: Size = 0    # test images kept, the first of the set (0 = all)

    def sizes(self, n_train: int, n_test: int) -> tuple[int, int]:
        """The training and test images a prepared dataset of ``n_train`` and ``n_test`` images keeps."""
        return min(n_train, self.train_images or n_train), min(n_test, self.test_images or n_test)


@dataclass(frozen=True)
class ThreatConfig:
    eps: Step
    alpha: Step
    eval_steps: Annotated[list[Count], NON_EMPTY]   # PGD step counts reported in the tables, e.g. [40, 200]


@dataclass(frozen=True)
class SplitConfig:
    train_subset: Size       # training images kept (0 = all), before the validation split
    val_size: Count          # held out from the training split, for the learning-rate schedule


@dataclass(frozen=True)
class TrainSection:
    """params.yaml's ``train.<dataset>``: what every training stage shares (``training.loops.TrainConfig`` is what
    one training loop takes, built from this and the stage's own section)."""
    batch_size: Count
    lr: Positive
    lr_patience: Size        # epochs without validation improvement before the learning rate is halved
    bf16: bool               # bfloat16 autocast in all training; evaluation is float32
    augment: bool            # random crop (pad 4) and horizontal flip of training batches


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: Count            # natural training


@dataclass(frozen=True)
class AdversarialConfig:
    """Adversarial training, one budget for Madry and AAA alike: the same optimizer iterations and schedule."""
    epochs: Count
    epoch_images: Size       # images drawn at random per epoch (0 = all)
    steps: Count             # PGD steps of the training attack
    alpha: Step              # PGD step size of the training attack
    eps_ramp: Size           # iterations over which the training eps grows linearly from 0 (0 = none)


@dataclass(frozen=True)
class AEConfig:
    """The AAA autoencoder: architecture and the AE's own training knobs (its budget is ``AdversarialConfig``)."""
    latent_dim: Count = 128  # MNIST AE latent size
    width: Positive = 1.0    # channel multiplier of the Fashion-MNIST and CIFAR-10 AEs (1.0 = the paper's)
    warm_epochs: Size = 0    # epochs of clean reconstruction (no attack, no classifier) before adversarial training
    mse_weight: Positive = 1.0   # L_ce+mse = ce + mse_weight * mse (the L_mse and L_ce losses ignore it)


@dataclass(frozen=True)
class EvaluateConfig:
    subset: Size             # test images attacked, a seeded random subset (aaa_core.data.test_order; 0 = all)
    restarts: Count
    sanity_subset: Count
    sanity_eps: Step
    sanity_alpha: Step
    sanity_steps: Count
    sanity_max_acc: Fraction  # robust accuracy at sanity_eps must be at most this
    transfer_tolerance: Fraction  # white-box may be weaker than transfer by at most this
    # a pipeline whose PGD accuracy is flat over the protocol's step counts while at least flat_min_acc is also
    # attacked with margin-loss PGD and Square (flat_square_queries), so masking is told from robustness
    flat_min_acc: Fraction = 0.05
    flat_square_queries: Count = 100


@dataclass(frozen=True)
class SweepConfig:
    eps: Annotated[list[Probe], NON_EMPTY]
    subset: Size
    steps: Count


@dataclass(frozen=True)
class SuiteSection:
    """The adaptive-attack suite (stage ``robustness``); its eps and paper protocol come from ``threat``."""
    subset: Size
    pgd_steps: Count          # PGD with restarts, cross-entropy and margin loss
    pgd_alpha: Step
    pgd_restarts: Count
    apgd_steps: Count         # APGD-CE and APGD-T iterations (AutoAttack's standard: 100)
    apgdt_targets: Annotated[int, Range(1, 9)]   # APGD-T target classes (AutoAttack's standard: 9)
    square_queries: Count     # Square attack query budget per example
    transfer_steps: Count     # PGD steps of the transfer attacks, crafted on the source model
    curve_eps: Annotated[list[Probe], NON_EMPTY]  # accuracy against eps (PGD-curve_steps); must fall to ~0
    curve_steps: Count
    max_acc_at_high_eps: Fraction
    masking_tolerance: Fraction  # query-only / transfer may beat the best white-box attack by at most this
    max_masking_gap: Fraction = 1.0   # an acknowledged pipeline's gap above the tolerance may be at most this
    # pipelines (stage names, e.g. ae_ce-dnn) whose masked gradients were seen, investigated and are
    # reported: their masking check is reported loudly instead of failing the stage; any other fails it
    acknowledged_masking: list[str] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class KNNConfig:
    subset: Size
    k: Count                  # neighbours averaged (the paper: 10)
    square_queries: Count     # Square's query budget on the kNN pipelines
    bpda_tolerance: Fraction  # the BPDA attack may be weaker than the non-adaptive one by at most this
    apgd_restarts: Count = 2  # APGD-CE through the straight-through gradient: restarts, each its own seed
    apgd_steps: Size = 0      # and its iterations (0 = the paper protocol's largest PGD step count)


@dataclass(frozen=True)
class CertifyConfig:
    """Randomized smoothing (stage certify, Cohen et al. 2019): CERTIFY of each test image under Gaussian noise."""
    subset: Size              # test images certified, a seeded random subset (aaa_core.data.test_order; 0 = all)
    n0: Count                 # noise samples that select the top class
    n: Count                  # noise samples that bound its probability (Cohen: 100,000)
    alpha: Annotated[float, Range(0, 0.5, lo_open=True)]   # probability that a certificate is wrong
    batch_size: Count         # noisy samples per forward pass
    sigmas: Annotated[list[Positive], NON_EMPTY]           # noise standard deviations, pixel units


ModelsConfig = dict[str, dict[str, Count]]   # classifier arch -> constructor arguments ({} = the paper's size)

SECTIONS: dict[str, Any] = {
    "threat": ThreatConfig, "split": SplitConfig, "train": TrainSection, "classifier": ClassifierConfig, "models": ModelsConfig,
    "adversarial": AdversarialConfig, "ae": AEConfig, "evaluate": EvaluateConfig,
    "sweep": SweepConfig, "suite": SuiteSection, "knn": KNNConfig, "certify": CertifyConfig,
}
TOP_LEVEL = ("seed", "scale", "loss", "other_losses", "device", "devices", "data", *SECTIONS, "scales")
# what a scale may change of the threat model: the PGD step counts reported (eps and step are the paper's at every scale)
THREAT_SCALED = ("eval_steps",)


@dataclass(frozen=True)
class Params:
    seed: int
    scale: str
    loss: str
    other_losses: list[str]  # AE losses trained and evaluated beside the headline ``loss`` (Tables 1-7's other rows)
    device: str              # auto (CUDA when available, else CPU), cpu, cuda or cuda:N (runtime.resolve_device)
    devices: int             # processes per training stage (torchrun + DDP when > 1; one GPU each on CUDA)
    resolved_data: dict[str, DataConfig]             # scale -> data section
    resolved: dict[str, dict[str, dict[str, Any]]]   # scale -> section -> dataset -> config

    @property
    def data(self) -> DataConfig:
        """The ``data`` section at the selected scale (overlay applied)."""
        return self.resolved_data[self.scale]

    def section(self, name: str, dataset: str) -> Any:
        """The ``name`` section of ``dataset`` at the selected scale (overlay applied)."""
        try:
            return self.resolved[self.scale][name][dataset]
        except KeyError:
            raise ParamsError(f"params: no {name}.{dataset} section") from None

    def attack(self, dataset: str) -> ThreatConfig:
        """``threat.<dataset>`` at the selected scale: eps and step as the paper's, the reported step counts scaled."""
        return self.section("threat", dataset)


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _strip(hint: Any) -> tuple[Any, tuple]:
    if get_origin(hint) is Annotated:
        base, *extras = get_args(hint)
        return base, tuple(extras)
    return hint, ()


def _convert(value: Any, hint: Any, where: str) -> Any:
    hint, extras = _strip(hint)
    value = _convert_plain(value, hint, where)
    for extra in extras:
        if isinstance(extra, Range) and not extra.holds(value):
            raise ParamsError(f"params: {where} = {value!r} is out of range: expected {extra}")
        if extra == NON_EMPTY and not value:
            raise ParamsError(f"params: {where} must be a non-empty list, got {value!r}")
    return value


def _convert_plain(value: Any, hint: Any, where: str) -> Any:
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


def _build(cls: type, raw: Any, where: str, names: dict[str, str] | None = None) -> Any:
    """``cls`` from the mapping ``raw``; ``names`` gives a key's full name where it is not ``where.key``."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {where or 'the file'} must be a mapping, got {raw!r}")
    hints = get_type_hints(cls, include_extras=True)
    known = {f.name for f in fields(cls)}
    prefix = f"{where}." if where else ""
    full = {k: (names or {}).get(k, prefix + k) for k in raw}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ParamsError(f"params: unknown key(s) {', '.join(full[k] for k in unknown)}; "
                          f"expected {', '.join(sorted(known))}")
    optional = {f.name for f in fields(cls)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    missing = sorted(known - set(raw) - optional)
    if missing:
        raise ParamsError(f"params: missing key(s) {', '.join(prefix + k for k in missing)}")
    return cls(**{k: _convert(raw[k], hints[k], full[k]) for k in known if k in raw})


def _mapping(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {where} must be a mapping, got {raw!r}")
    return raw


def _resolve(raw: dict, scale: str, overlay: dict, data: DataConfig) -> dict[str, dict[str, Any]]:
    """Every section of every dataset at ``scale``: the base values with ``overlay``'s keys replaced (``data``: the
    ``data`` section at that scale, which sizes the prepared datasets)."""
    resolved: dict[str, dict[str, Any]] = {}
    for name, hint in SECTIONS.items():
        base = _mapping(raw[name], name)
        extra = _mapping(overlay.get(name, {}), f"scales.{scale}.{name}")
        strays = sorted(set(extra) - set(base))
        if strays:
            raise ParamsError(f"params: scales.{scale}.{name}.{strays[0]}: no dataset {strays[0]!r} in {name}")
        resolved[name] = {}
        for dataset, values in base.items():
            changes = _mapping(extra.get(dataset) or {}, f"scales.{scale}.{name}.{dataset}")
            merged = {**_mapping(values, f"{name}.{dataset}"), **changes}
            names = {k: f"scales.{scale}.{name}.{dataset}.{k}" for k in changes}
            if dataclasses.is_dataclass(hint):
                resolved[name][dataset] = _build(hint, merged, f"{name}.{dataset}", names)
            else:
                resolved[name][dataset] = {k: _convert(v, get_args(hint)[1], names.get(k, f"{name}.{dataset}.{k}"))
                                           for k, v in merged.items()}
    for dataset in DATASET_SIZES:
        _check_sizes(resolved, dataset, scale, data)
    return resolved


def _check_sizes(resolved: dict, dataset: str, scale: str, data: DataConfig) -> None:
    """Subsets no larger than what they are drawn from (the datasets as prepared at ``scale``)."""
    n_train, n_test, n_classes = DATASET_SIZES[dataset]
    n_train, n_test = data.sizes(n_train, n_test)
    at = f" (scale {scale})"

    def bound(section: str, key: str, value: int, limit: int, what: str) -> None:
        if value > limit:
            raise ParamsError(f"params: {section}.{dataset}.{key} = {value} is out of range{at}: "
                              f"expected at most {limit} ({what})")

    def get(section: str):
        return resolved[section].get(dataset)

    split = get("split")
    if split is None:
        return
    bound("split", "val_size", split.val_size, n_train - 1, f"{dataset} has {n_train} training images")
    pool = split.train_subset or n_train
    bound("split", "train_subset", pool, n_train, f"{dataset} has {n_train} training images")
    bound("split", "val_size", split.val_size, pool - 1, "split.train_subset")
    if get("adversarial"):
        bound("adversarial", "epoch_images", get("adversarial").epoch_images, pool - split.val_size,
              "the training split after validation")
    for section in ("evaluate", "sweep", "suite", "knn", "certify"):
        if get(section):
            bound(section, "subset", get(section).subset, n_test, f"{dataset} has {n_test} test images")
    evaluate = get("evaluate")
    if evaluate:
        bound("evaluate", "sanity_subset", evaluate.sanity_subset, evaluate.subset or n_test,
              "the evaluated subset it is drawn from")
    if get("suite"):
        bound("suite", "apgdt_targets", get("suite").apgdt_targets, n_classes - 1, "the other classes")
    if get("knn"):
        bound("knn", "k", get("knn").k, pool - split.val_size, "the latent bank's size")


def parse_params(raw: Any) -> Params:
    raw = _mapping(raw, "the file")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ParamsError(f"params: unknown key(s) {', '.join(unknown)}; expected {', '.join(TOP_LEVEL)}")
    missing = [k for k in TOP_LEVEL if k not in raw]
    if missing:
        raise ParamsError(f"params: missing key(s) {', '.join(missing)}")
    seed = _convert(raw["seed"], Annotated[int, Range(0)], "seed")
    scale = _convert(raw["scale"], str, "scale")
    loss = _convert(raw["loss"], str, "loss")
    scales = _mapping(raw["scales"], "scales")
    if scale not in scales:
        raise ParamsError(f"params: scale must be one of {sorted(scales)}, got {scale!r}")
    if loss not in AE_LOSSES:
        raise ParamsError(f"params: loss must be one of {list(AE_LOSSES)}, got {loss!r}")
    other_losses = _convert(raw["other_losses"] or [], list[str], "other_losses")
    if any(name not in AE_LOSSES or name == loss for name in other_losses) or len(set(other_losses)) != len(other_losses):
        raise ParamsError(f"params: other_losses must be distinct names of {list(AE_LOSSES)} other than the headline "
                          f"loss {loss!r}, got {other_losses!r}")
    device = _convert(raw["device"], str, "device")
    if not DEVICE_NAMES.match(device):
        raise ParamsError(f"params: device must be auto, cpu, cuda or cuda:N, got {device!r}")
    for name, overlay in scales.items():
        strays = sorted(set(_mapping(overlay or {}, f"scales.{name}")) - {"data", *SECTIONS})
        if strays:
            raise ParamsError(f"params: unknown key(s) scales.{name}.{strays[0]}; expected data, "
                              f"{', '.join(SECTIONS)}")
        for dataset, keys in _mapping((overlay or {}).get("threat") or {}, f"scales.{name}.threat").items():
            fixed = sorted(set(_mapping(keys or {}, f"scales.{name}.threat.{dataset}")) - set(THREAT_SCALED))
            if fixed:
                raise ParamsError(f"params: scales.{name}.threat.{dataset}.{fixed[0]}: a scale may change only "
                                  f"{', '.join(THREAT_SCALED)} of the threat model (eps and step are the same at every scale)")
    devices = _convert(raw["devices"], Count, "devices")
    data = {name: _scale_data(raw, name, overlay or {}) for name, overlay in scales.items()}
    return Params(seed=seed, scale=scale, loss=loss, other_losses=other_losses, device=device, devices=devices,
                  resolved_data=data,
                  resolved={name: _resolve(raw, name, overlay or {}, data[name]) for name, overlay in scales.items()})


def _scale_data(raw: dict, scale: str, overlay: dict) -> DataConfig:
    """The ``data`` section at ``scale``: its keys replaced by ``scales.<scale>.data``'s."""
    changes = _mapping(overlay.get("data") or {}, f"scales.{scale}.data")
    return _build(DataConfig, {**_mapping(raw["data"], "data"), **changes}, "data",
                  {k: f"scales.{scale}.data.{k}" for k in changes})


def read_params_file(path: str | Path) -> Any:
    """The parsed YAML of a params file (params.yaml, blackbox.yaml, comparison.yaml, ablations.yaml); a missing
    file or invalid YAML raises ``ParamsError`` naming the file (and the line, where YAML gives one)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} does not exist") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ParamsError(f"params file {path} is not valid YAML{line}: "
                          f"{getattr(err, 'problem', None) or err}") from None


@contextmanager
def _naming(path: str | Path) -> Iterator[None]:
    """Prefix a ``ParamsError`` raised inside the block with the file it is about."""
    try:
        yield
    except ParamsError as err:
        raise ParamsError(f"{path}: {str(err).removeprefix('params: ')}") from None


def _dataset_section(raw: Any, dataset: str, scale: str | None = None, what: str = "section") -> tuple[dict, dict]:
    """A side params file's ``<dataset>`` section and its ``scales.<scale>.<dataset>`` overlay (the one
    convention of every side file), with the overlay's keys named for error messages."""
    if not isinstance(raw, dict) or not isinstance(raw.get(dataset), dict) or not raw[dataset]:
        raise ParamsError(f"params: no {dataset} {what}")
    overlay = ((raw.get("scales") or {}).get(scale) or {}).get(dataset) or {} if scale else {}
    return dict(raw[dataset]), overlay


def load_params(path: str | Path = "params.yaml") -> Params:
    """params.yaml, parsed and validated at every scale (``Params``)."""
    raw = read_params_file(path)
    with _naming(path):
        return parse_params(raw)

# ---- the side params files of the other pipelines, read and checked like params.yaml ----


@dataclass(frozen=True)
class ComparisonConfig:
    """comparison.yaml's ``<dataset>`` (comparison/dvc.yaml)."""
    seed_offsets: list[int]    # extra training seeds, as offsets from params.yaml's seed (the study's models: 0)
    autoattack_subset: Size    # test images attacked by AutoAttack, the seeded random subset (0 = all 10,000)
    # AutoAttack's iterations (APGD-CE, APGD-T, FAB-T) and Square's queries: Croce & Hein's standard version
    # at 100 and 5,000; anything else is recorded and reported as a reduced AutoAttack, never as the standard one
    autoattack_steps: Count = 100
    autoattack_square_queries: Count = 5000


def load_comparison(path: str | Path, dataset: str, scale: str) -> ComparisonConfig:
    """``<dataset>`` of comparison.yaml with ``scales.<scale>.<dataset>`` laid over it."""
    raw = read_params_file(path)
    with _naming(path):
        section, overlay = _dataset_section(raw, dataset, scale)
        names = {k: f"scales.{scale}.{dataset}.{k}" for k in overlay}
        cfg = _build(ComparisonConfig, {**section, **overlay}, dataset, names)
        offsets = cfg.seed_offsets
        if not all(isinstance(o, int) and not isinstance(o, bool) and o >= 1 for o in offsets) \
                or len(set(offsets)) != len(offsets):
            raise ParamsError(f"params: {dataset}.seed_offsets = {offsets!r}: expected distinct integers >= 1 "
                              "(offset 0 is the study's own models)")
        return cfg


OUTPUTS = ("logits", "probs")


@dataclass(frozen=True)
class BlackboxConfig:
    """One AE training budget shared by the black-box study's trainings (blackbox.yaml's ``<dataset>``);
    the training attack's steps and step are params.yaml's ``adversarial.<dataset>``."""
    epochs: Count
    epoch_images: Size         # images drawn per epoch (0 = all)
    eps_ramp: Size             # iterations over which the training eps grows linearly from 0
    warm_epochs: Size          # epochs of clean reconstruction before adversarial training (0 = none)
    estimate_images: Count     # images per batch whose CE gradient the latent estimate takes in the AE's update
    smoothing: Step            # mu: the finite-difference step of the latent estimate
    surrogate_weight: Fraction  # the update's gradient: this much the surrogate's exact one, the rest the estimate
    output: str                # what the black box returns: logits or probs
    surrogate: str             # the surrogate's architecture (of the dataset's zoo)


def load_blackbox(path: str | Path, dataset: str, scale: str,
                  classifiers: Sequence[str] | None = None) -> BlackboxConfig:
    """``<dataset>`` of blackbox.yaml with ``scales.<scale>.<dataset>`` laid over it; ``classifiers``, where
    given, are the architectures the surrogate may name (the dataset's zoo: ``models.zoo_classifiers``)."""
    raw = read_params_file(path)
    with _naming(path):
        section, overlay = _dataset_section(raw, dataset, scale)
        names = {k: f"scales.{scale}.{dataset}.{k}" for k in overlay}
        cfg = _build(BlackboxConfig, {**section, **overlay}, dataset, names)
        if cfg.output not in OUTPUTS:
            raise ParamsError(f"params: {dataset}.output = {cfg.output!r}: expected one of {', '.join(OUTPUTS)}")
        if classifiers is not None and cfg.surrogate not in classifiers:
            raise ParamsError(f"params: {dataset}.surrogate = {cfg.surrogate!r}: expected a classifier of the "
                              f"{dataset} zoo")
        return cfg


@dataclass(frozen=True)
class VariantConfig:
    """One variant of ablations.yaml's ``<dataset>``: values of the AE's two training knobs."""
    warm_epochs: Size      # epochs of clean reconstruction before adversarial training (0 = none)
    mse_weight: Positive   # L = ce + mse_weight * mse (1 = the paper's L_ce+mse)


def load_variants(path: str | Path, dataset: str) -> dict[str, VariantConfig]:
    """Every variant of ``<dataset>`` in ablations.yaml (no scales: a variant is a value of params.yaml's keys)."""
    raw = read_params_file(path)
    with _naming(path):
        section, _ = _dataset_section(raw, dataset, what="section of variants")
        return {name: _build(VariantConfig, spec, f"{dataset}.{name}") for name, spec in section.items()}
