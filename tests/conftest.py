"""Shared fixtures: real MNIST (the offline copy the setup command fetches) and a small trained model.

Tests run on 2 CPU cores in well under the 15-minute budget; longer checks carry ``@pytest.mark.slow``
and run only with RUN_SLOW=1 (``make test-slow``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from aaa_core.data import fetch, to_float
from aaa_core.training.loops import TrainConfig, train_classifier
from aaa_core.models import build

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / "data" / "offline"

torch.set_num_threads(min(2, torch.get_num_threads()))


def set_key(raw: dict, dotted: str, value) -> None:
    """Set ``raw``'s value at a dotted params key such as ``threat.mnist.eps``."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        raw = raw[part]
    raw[leaf] = value


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set RUN_SLOW=1 (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_raw() -> dict[str, torch.Tensor]:
    if not (OFFLINE / "mnist").is_dir():
        pytest.fail(f"{OFFLINE / 'mnist'} is missing: run `make data` (the README's test command does)")
    tensors, _ = fetch("mnist", user_dir=None, download=False, offline_dir=OFFLINE)
    return tensors


@pytest.fixture(scope="session")
def mnist(mnist_raw) -> dict[str, torch.Tensor]:
    """Float MNIST: 6,000 training and 1,000 test images."""
    return {"x_train": to_float(mnist_raw["x_train"][:6000]), "y_train": mnist_raw["y_train"][:6000],
            "x_test": to_float(mnist_raw["x_test"][:1000]), "y_test": mnist_raw["y_test"][:1000]}


@pytest.fixture(scope="session")
def trained_fc(mnist) -> torch.nn.Module:
    """The FC classifier after one natural epoch on 6,000 images (about 90% test accuracy, seconds)."""
    torch.manual_seed(0)
    model = build("mnist", "fc")
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.002, lr_patience=5, seed=0)
    train_classifier(model, mnist["x_train"], mnist["y_train"], mnist["x_test"][:200], mnist["y_test"][:200],
                     cfg, log=lambda _: None)
    return model.eval()
