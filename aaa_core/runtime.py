"""What every stage does around its one library call: seeding, prepared data, resumable state."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from aaa_core.checkpoints import load_torch, save_torch
from aaa_core.data import to_float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_prepared(path: str | Path) -> dict:
    """The output of ``prepare_data``: float images in [0, 1], int64 labels, and where they came from."""
    raw = load_torch(path)
    expected = {"x_train", "y_train", "x_test", "y_test", "dataset", "label", "source"}
    if not isinstance(raw, dict) or not expected <= set(raw):
        raise ValueError(f"{path}: not a prepared dataset (expected keys {sorted(expected)}); "
                         "re-run the prepare_data stage")
    return {**raw, "x_train": to_float(raw["x_train"]), "x_test": to_float(raw["x_test"])}


class Resume:
    """Resumable training state for one output, kept outside DVC's outputs (DVC deletes those on re-run).

    The state is tagged with a description of the run (dataset, model, params); a state whose description
    differs from the current run is ignored, so changed params never resume a stale run.
    """

    def __init__(self, out: str | Path, root: str | Path = ".resume") -> None:
        self.path = Path(root) / (str(Path(out)).replace("/", "__") + ".state")

    def load(self, description: dict, log=print) -> dict | None:
        if not self.path.is_file():
            return None
        state = load_torch(self.path)
        if state.get("description") != description:
            log(f"ignoring {self.path}: it was saved for a different configuration")
            return None
        return state["state"]

    def saver(self, description: dict):
        def save(state: dict) -> None:
            save_torch({"description": description, "state": state}, self.path)
        return save

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
