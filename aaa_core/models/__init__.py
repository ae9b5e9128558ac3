"""Model zoo keyed like the paper's tables: ``build(dataset, name)``.

Every classifier maps images in [0, 1] of shape (N, C, H, W) to logits (N, K), normalisation inside.
Every autoencoder maps [0, 1] images to [0, 1] images of the same shape and exposes ``encode``/``decode``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from aaa_core.models import mnist
from aaa_core.models.compose import Defended, Normalize, freeze

REGISTRY: dict[str, dict[str, Callable[..., nn.Module]]] = {
    "mnist": {**mnist.CLASSIFIERS, **mnist.AUTOENCODERS},
}
AUTOENCODER_NAMES = {"ae"}


def list_models(dataset: str) -> list[str]:
    return sorted(_zoo(dataset))


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


__all__ = ["REGISTRY", "AUTOENCODER_NAMES", "Defended", "Normalize", "build", "freeze", "list_models"]
