"""What the black-box study's training stages share: its parameters, the data split and the classifier as a black box."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from aaa_core.config import BlackboxConfig, Params, load_blackbox, load_params
from aaa_core.data import load_prepared, split_train_val
from aaa_core.models import zoo_classifiers
from aaa_core.models.checkpoints import load_model
from aaa_core.runtime import resolve_device, seed_everything
from aaa_core.training.query_only import QueryOnly


@dataclass
class BlackboxSetup:
    params: Params
    bb_cfg: BlackboxConfig
    device: torch.device
    data: dict
    train: tuple[Tensor, Tensor]        # the training split (images, labels)
    val: tuple[Tensor, Tensor]          # the validation split
    classifier: nn.Module               # the frozen classifier, for evaluations only
    blackbox: QueryOnly                 # the same classifier as training may see it: queried, every query counted


def setup(dataset: str, classifier_path: Path, data_path: Path, params_path: Path, blackbox_path: Path) -> BlackboxSetup:
    """params.yaml and blackbox.yaml (``<dataset>`` at the params' scale, the surrogate checked against the zoo),
    the seed set, the data on the params' device split as every stage splits it, the classifier and its black box."""
    params = load_params(params_path)
    bb_cfg = load_blackbox(blackbox_path, dataset, params.scale, zoo_classifiers(dataset))
    split = params.section("split", dataset)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    train, val = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset, val_size=split.val_size,
                                 seed=params.seed)
    classifier, _ = load_model(classifier_path, kind="classifier", dataset=dataset, device=device)
    return BlackboxSetup(params, bb_cfg, device, data, train, val, classifier,
                         QueryOnly(classifier, output=bb_cfg.output))
