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
import io
import json
import os
import pickle
import secrets
import textwrap
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from aaa_core.errors import AAAError, CheckpointError
from aaa_core.models import build

REDO = "re-run the stage that writes it"
REQUIRED = ("kind", "dataset", "arch", "arch_kwargs", "state_dict")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The temporary file is created as ``open(path, "w")`` would create it (mode 0666 less the umask), not
    with mkstemp's 0600, so outputs get the usual modes; a random name and O_EXCL keep writers apart.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save``, atomic and byte-deterministic: the same content always gives the same file.

    Saved to a file, torch names the archive's records after the file (here a random temporary name), so
    every re-run changed the bytes and DVC's lock; saved to a buffer it names them ``archive/``, and its zip
    records carry no timestamp.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_torch(path: str | Path, *, what: str = "checkpoint",
               error: type[AAAError] = CheckpointError) -> Any:
    """``torch.load`` (``weights_only=True``: a file never runs code) failing with one ``error`` line naming the file.

    torch fails on a damaged file in many ways: EOFError on an empty one (which click reports as a bare
    "Aborted!"), a miniz RuntimeError on a truncated one, KeyError or UnicodeDecodeError on a flipped byte,
    and a flipped byte in a tensor loads silently. The zip archive's own CRC-32s are checked first, so all
    of these become "truncated or corrupt".
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: missing; expected a {what}; {REDO}")
    _check_archive(path, what, error)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(f"{path}: refused by torch.load(weights_only=True): it holds more than tensors and plain "
                    f"data, or its pickle is damaged; expected a {what}; {REDO}") from err
    except Exception as err:  # an intact archive torch cannot read: any of its failure modes means the same
        raise error(f"{path}: unreadable {what} ({type(err).__name__}: {_one_line(err)}); {REDO}") from err


def _check_archive(path: Path, what: str, error: type[AAAError]) -> None:
    """Raise ``error`` unless ``path`` is a complete zip archive (torch's format) whose records match their CRC-32s."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as err:  # a damaged archive fails in many ways: BadZipFile, EOFError, NotImplementedError...
        raise error(f"{path}: truncated or corrupt {what} ({path.stat().st_size} bytes, not a readable torch "
                    f"zip archive: {_one_line(err)}); {REDO}") from err
    if damaged is not None:
        raise error(f"{path}: corrupt {what} (record {damaged} fails its CRC-32 check); {REDO}")


def _one_line(err: BaseException, width: int = 200) -> str:
    """Another library's (often multi-line) message, folded and shortened to fit one line of ours."""
    return textwrap.shorten(str(err), width) or type(err).__name__


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


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
    ckpt = load_torch(path, what="model checkpoint")
    _check_description(Path(path), ckpt, kind, dataset)
    model = _rebuild(Path(path), ckpt)
    return model.to(device).eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


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
