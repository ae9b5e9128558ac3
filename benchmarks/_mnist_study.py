"""What the query-only benchmarks share: the study's MNIST data, its natural DNN and the training split, on the CPU."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from aaa_core.data import load_prepared, split_train_val
from aaa_core.models.checkpoints import load_model

ROOT = Path(__file__).resolve().parents[1]


def mnist_study(threads: int) -> tuple[dict, nn.Module, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(the prepared data, the natural DNN, the training split, the validation split): the study's MNIST split (30,000
    training images, 1,000 validation, seed 0), with ``threads`` CPU threads."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    data = load_prepared(ROOT / "data/mnist/mnist.pt", device)
    dnn, _ = load_model(ROOT / "models/mnist/dnn.pt", kind="classifier", dataset="mnist", device=device)
    train, val = split_train_val(data["x_train"], data["y_train"], subset=30000, val_size=1000, seed=0)
    return data, dnn, train, val
