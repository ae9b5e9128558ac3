"""Model zoo keyed like the paper's tables: ``build(dataset, name)``.

One module per dataset (``mnist.py``, ...), each with ``CLASSIFIERS`` and ``AUTOENCODERS`` dicts of
constructors; the registry finds them by module name, so adding a dataset touches no other file (and no
other dataset's DVC stages).

Every classifier maps images in [0, 1] of shape (N, C, H, W) to logits (N, K), normalisation inside.
Every autoencoder maps [0, 1] images to [0, 1] images of the same shape and exposes ``encode``/``decode``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from torch import nn

from aaa_core.models.compose import Defended, Normalize, freeze

# the modules of this package that are not a dataset's zoo
_SHARED = {"compose", "checkpoints", "external", "generic"}


def _discover() -> tuple[dict[str, dict[str, Callable[..., nn.Module]]], dict[str, set[str]], dict[str, dict], dict]:
    registry, autoencoders, ae_params, data_specs = {}, {}, {}, {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _SHARED or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        registry[info.name] = {**module.CLASSIFIERS, **module.AUTOENCODERS}
        autoencoders[info.name] = set(module.AUTOENCODERS)
        ae_params[info.name] = dict(getattr(module, "AE_PARAMS", {}))
        if getattr(module, "DATA", None) is not None:   # its sources (aaa_core.data.DatasetSpec)
            data_specs[info.name] = module.DATA
    return registry, autoencoders, ae_params, data_specs


REGISTRY, AUTOENCODERS, _AE_PARAMS, DATA_SPECS = _discover()


def ae_kwargs(dataset: str, config) -> dict:
    """The AE constructor's keyword arguments, read from the ``ae.<dataset>`` params section (``AE_PARAMS`` of
    the dataset's module: constructor argument -> field)."""
    _zoo(dataset)
    return {arg: getattr(config, field) for arg, field in _AE_PARAMS[dataset].items()}


def list_models(dataset: str) -> list[str]:
    return sorted(_zoo(dataset))


def is_autoencoder(dataset: str, name: str) -> bool:
    return name in AUTOENCODERS.get(dataset, set())


def zoo_classifiers(dataset: str) -> list[str]:
    """The classifier architectures of ``dataset``'s zoo (every model that is not an autoencoder)."""
    return [name for name in list_models(dataset) if not is_autoencoder(dataset, name)]


def _zoo(dataset: str) -> dict[str, Callable[..., nn.Module]]:
    try:
        return REGISTRY[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(REGISTRY)}") from None


def build(dataset: str, name: str, **kwargs) -> nn.Module:
    """A fresh model ``name`` of ``dataset``'s zoo (ValueError listing the valid names otherwise)."""
    zoo = _zoo(dataset)
    if name not in zoo:
        raise ValueError(f"unknown model {name!r} for {dataset}; expected one of {sorted(zoo)}")
    return zoo[name](**kwargs)


__all__ = ["REGISTRY", "AUTOENCODERS", "Defended", "Normalize", "ae_kwargs", "build", "freeze", "is_autoencoder", "list_models",
           "zoo_classifiers"]
