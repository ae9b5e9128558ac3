"""Self-describing checkpoints, atomic writes and resumable training state.

A checkpoint says what it is (kind, dataset, arch, loss, the params used, the sha256 of its weights)
beside its weights, so ``load_model`` rebuilds it through the registry without the caller naming the
architecture, and refuses it when the weights changed since they were saved. Everything loads with
``weights_only=True``; a file that cannot be loaded fails with one line naming it (``CheckpointError``).
Every file is written to a temporary name and renamed into place, so an interrupted stage never leaves an
output that looks complete.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aaa_core.errors import CheckpointError
from aaa_core.io import REDO, _one_line, load_torch, save_torch
from aaa_core.models import Defended, build

REQUIRED = ("kind", "dataset", "arch", "arch_kwargs", "state_dict")


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: the weights themselves,
    whatever order or archive layout they were saved in."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_model(model: nn.Module, path: str | Path, *, kind: str, dataset: str, arch: str,
               arch_kwargs: dict | None = None, **meta: Any) -> None:
    """Save weights with what is needed to rebuild and verify them: kind ('classifier'|'ae'), dataset, arch,
    kwargs, meta and the weights' sha256."""
    state_dict = model.state_dict()
    save_torch({"kind": kind, "dataset": dataset, "arch": arch, "arch_kwargs": arch_kwargs or {},
                "meta": meta, "weights_sha256": weights_sha256(state_dict), "state_dict": state_dict}, path)


def load_model(path: str | Path, *, kind: str | None = None, dataset: str | None = None,
               device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a saved model through the registry; returns (model in eval mode on ``device``, its description).

    Refuses, naming the file: a checkpoint of another kind or dataset than asked for, one without the sha256
    of its weights (an older format) or whose weights no longer match it, and one whose weights do not fit
    the architecture it names.
    """
    ckpt = load_torch(path, what="model checkpoint", error=CheckpointError)
    _check_description(Path(path), ckpt, kind, dataset)
    model = _rebuild(Path(path), ckpt)
    return model.to(device).eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


def load_pipeline(spec: str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict, dict | None]:
    """The pipeline that ``spec`` names: "CLASSIFIER.pt" (the classifier alone) or "AE.pt+CLASSIFIER.pt" (the AE in
    front of the classifier, ``Defended``), each loaded by ``load_model`` as its kind. Returns (the pipeline in
    eval mode on ``device``, the classifier's description, the AE's description or None)."""
    parts = spec.split("+")
    classifier, clf_info = load_model(parts[-1], kind="classifier", device=device)
    if len(parts) == 1:
        return classifier, clf_info, None
    ae, ae_info = load_model(parts[0], kind="ae", device=device)
    return Defended(ae, classifier).eval(), clf_info, ae_info


def _check_description(path: Path, ckpt: Any, kind: str | None, dataset: str | None) -> None:
    """Refuse what the checkpoint says it is (or its weights' hash) before anything is built from it."""
    if not isinstance(ckpt, dict) or not set(REQUIRED) <= set(ckpt) or not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path}: not an aaa model checkpoint (expected a dict with {', '.join(REQUIRED)}); "
                              f"{REDO}")
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path}: holds a {ckpt['kind']}, expected a {kind}")
    if dataset is not None and ckpt["dataset"] != dataset:
        raise CheckpointError(f"{path}: holds a {ckpt['dataset']} {ckpt['kind']}, expected a {dataset} one")
    if "weights_sha256" not in ckpt:
        raise CheckpointError(f"{path}: older checkpoint format without the sha256 of its weights; {REDO}")
    if weights_sha256(ckpt["state_dict"]) != ckpt["weights_sha256"]:
        raise CheckpointError(f"{path}: its weights do not match the sha256 recorded beside them (damaged or "
                              f"edited); {REDO}")


def _rebuild(path: Path, ckpt: dict) -> nn.Module:
    """The registry's model for the checkpoint's description, holding its weights."""
    spec = f"{ckpt['dataset']}/{ckpt['arch']} with {ckpt['arch_kwargs']}"
    try:
        model = build(ckpt["dataset"], ckpt["arch"], **ckpt["arch_kwargs"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: names {spec}, which this code cannot build ({_one_line(err)})") from err
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit {spec} ({_one_line(err)}); {REDO}") from err
    return model
