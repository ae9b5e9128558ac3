"""What every stage does around its one library call: seeding, prepared data, resumable state."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aaa_core.checkpoints import load_torch, save_torch
from aaa_core.data import to_float
from aaa_core.errors import CheckpointError, DataFileError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global random states (torch CPU and CUDA, numpy, Python), as tensors, tuples and plain numbers only,
    so that a resume state holding them still loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured: a resumed run draws what the uninterrupted one would have
    (Dropout, for one, draws from torch's global generator)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def load_prepared(path: str | Path) -> dict:
    """The output of ``prepare_data``: float images in [0, 1], int64 labels, and where they came from."""
    raw = load_torch(path, what="prepared dataset", error=DataFileError)
    expected = {"x_train", "y_train", "x_test", "y_test", "dataset", "label", "source"}
    if not isinstance(raw, dict) or not expected <= set(raw):
        raise DataFileError(f"{path}: not a prepared dataset (expected keys {sorted(expected)}); "
                            "re-run the prepare_data stage")
    return {**raw, "x_train": to_float(raw["x_train"]), "x_test": to_float(raw["x_test"])}


def file_sha256(path: str | Path) -> str:
    """The file's content hash: what decides whether a resume state still fits its inputs (a path or an mtime
    would not see a classifier replaced in place)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Resume:
    """Resumable training state for one output, kept outside DVC's outputs (DVC deletes those on re-run).

    The state is tagged with a description of the run (dataset, model, params) and the sha256 of each of
    its input files (data, classifiers); a state whose description or inputs differ from the current run's
    is ignored, so neither changed params nor a replaced input ever resume a stale run.
    """

    def __init__(self, out: str | Path, inputs: Sequence[str | Path] = (), root: str | Path = ".resume") -> None:
        self.path = Path(root) / (str(Path(out)).replace("/", "__") + ".state")
        self.inputs = {str(p): file_sha256(p) for p in inputs}

    def load(self, description: dict, log=print) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            saved = load_torch(self.path, what="resume state")
        except CheckpointError as err:  # written atomically, so only damage on disk gets here: start over
            log(f"ignoring the resume state: {err}")
            return None
        if saved.get("description") != description:
            log(f"ignoring {self.path}: it was saved for a different configuration")
            return None
        changed = self._changed(saved.get("inputs") or {})
        if changed:
            log(f"ignoring {self.path}: its inputs changed ({', '.join(changed)})")
            return None
        return saved["state"]

    def _changed(self, saved: dict[str, str]) -> list[str]:
        """The input files whose content (or presence) differs from when the state was saved."""
        return sorted(p for p in saved.keys() | self.inputs.keys() if saved.get(p) != self.inputs.get(p))

    def saver(self, description: dict):
        def save(state: dict) -> None:
            save_torch({"description": description, "inputs": self.inputs, "state": state}, self.path)
        return save

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
