"""Self-describing checkpoints, atomic writes and resumable training state.

A checkpoint says what it is (kind, dataset, arch, loss, the params used) beside its weights, so
``load_model`` rebuilds it through the registry without the caller naming the architecture. Everything
loads with ``weights_only=True``. Every file is written to a temporary name and renamed into place, so an
interrupted stage never leaves an output that looks complete.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from aaa_core.models import build


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_torch(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_model(model: nn.Module, path: str | Path, *, kind: str, dataset: str, arch: str,
               arch_kwargs: dict | None = None, **meta: Any) -> None:
    """Save weights with what is needed to rebuild them: kind ('classifier'|'ae'), dataset, arch, kwargs, meta."""
    save_torch({"kind": kind, "dataset": dataset, "arch": arch, "arch_kwargs": arch_kwargs or {},
                "meta": meta, "state_dict": model.state_dict()}, path)


def load_model(path: str | Path, *, kind: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a saved model through the registry; returns (model in eval mode, its description)."""
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not an aaa checkpoint (expected a dict with kind, dataset, arch, state_dict)")
    if kind is not None and ckpt["kind"] != kind:
        raise ValueError(f"{path}: holds a {ckpt['kind']}, expected a {kind}")
    model = build(ckpt["dataset"], ckpt["arch"], **ckpt["arch_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    description = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval(), description
