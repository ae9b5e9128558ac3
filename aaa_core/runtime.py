"""What every stage does around its one library call: seeding, prepared data, resumable state."""
from __future__ import annotations

import platform
import random
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aaa_core.config import DEVICE_NAMES
from aaa_core.errors import AAAError, CheckpointError
from aaa_core.io import file_sha256, load_torch, save_torch


class DeviceError(AAAError):
    """A ``device`` parameter this machine cannot honour."""


def resolve_device(name: str) -> torch.device:
    """The ``device`` parameter as a torch device: ``auto`` = the current CUDA device when there is one, else
    the CPU; ``cpu``; ``cuda`` or ``cuda:N``, which must exist (a run asked for a GPU never falls back)."""
    if not isinstance(name, str) or not DEVICE_NAMES.match(name):
        raise DeviceError(f"params: device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            raise DeviceError(f"params: device {name!r} asked for a CUDA GPU, but this machine has "
                              f"{count} usable; use device: auto or cpu")
        device = torch.device("cuda", index)
    return device


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name, or the CPU's model (timings differ by host, so metrics keep it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_runtime(device: torch.device, *, bf16_training: bool | None = None) -> dict:
    """Where and how a stage ran, for its metrics file: device, its name, precision, torch and CUDA versions."""
    info = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "cuda_build": torch.version.cuda, "evaluation_precision": "float32",
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if device.type == "cuda" else None}
    if bf16_training is not None:
        info["training_precision"] = "bfloat16 autocast" if bf16_training else "float32"
    return info


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded generator on ``device``: every random draw of a loop or attack comes from one on its data's
    device (on the CPU the stream is the one a plain ``torch.Generator()`` gives)."""
    return torch.Generator(device=device).manual_seed(seed)


def attack_seed(seed: int, name: str) -> int:
    """The seed of one attack (or check) of a stage: derived from the stage seed and the attack's name, so two
    attacks never share a random start and the same attack is reproducible. Restarts of one attack draw
    successive starts from its one generator, and batches continue that stream, so no start repeats."""
    return zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF


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
            saved = load_torch(self.path, what="resume state", error=CheckpointError)
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
