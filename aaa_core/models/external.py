"""Your own classifier: load it from ``module:factory`` (with a state dict), check that it maps the dataset's
images to logits, and put a trained AE back in front of it. Used by the ``aaa`` command (``aaa_core.cli``);
usable from Python as well::

    from aaa_core.models.external import defend, load_classifier
    model = defend(load_classifier("torchvision.models:resnet18", weights="my.pt"), "ae.pt")   # AE + classifier

The DVC study does not depend on this module.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from torch import nn

from aaa_core import INPUT_SHAPES
from aaa_core.errors import CheckpointError, UserInputError
from aaa_core.io import load_torch
from aaa_core.models import Defended
from aaa_core.models.generic import load_ae

# ---- your classifier ----

def load_classifier(spec: str, weights: str | Path | None = None) -> nn.Module:
    """``module:factory`` -> ``factory()``, an ``nn.Module`` from [0, 1] images to logits, in eval mode.

    The current directory is importable (a ``my_models.py`` beside you works). ``weights``: a state dict
    saved with ``torch.save`` (or a dict holding one under ``state_dict``), loaded with ``weights_only=True``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserInputError(f"--classifier {spec!r}: expected MODULE:FACTORY, e.g. torchvision.models:resnet18")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserInputError(f"--classifier {spec!r}: cannot import {module_name!r} ({err})") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise UserInputError(f"--classifier {spec!r}: {module_name} has no attribute {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise UserInputError(f"--classifier {spec!r}: {attr}() returned {type(model).__name__}, expected an nn.Module")
    if weights is not None:
        state = load_torch(weights, what="state dict of the classifier", error=UserInputError)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise UserInputError(f"{weights}: expected a state dict (torch.save(model.state_dict(), ...))")
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise UserInputError(f"{weights}: does not fit {spec} ({first})") from None
    return model.eval()


def module_device(model: nn.Module) -> torch.device:
    """Where a module's parameters (or, without any, its buffers) live; the CPU for a module with neither."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device


def check_classifier(model: nn.Module, shape: tuple[int, ...], classes: int | None, name: str) -> None:
    """A zero batch of ``shape`` images, on the model's device, must come out as (N, classes) logits (any
    number of them for ``classes=None``)."""
    x = torch.zeros(2, *shape, device=module_device(model))
    try:
        with torch.no_grad():
            got = tuple(model(x).shape)
    except Exception as err:  # any failure of a user's model on these images means the same to the user
        got = f"an error ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if isinstance(got, str) or len(got) != 2 or got[0] != 2 or (classes is not None and got[1] != classes):
        raise UserInputError(f"{name}: maps images of shape {tuple(x.shape)} to {got}, expected "
                             f"(2, {classes or 'classes'}) logits")


def defend(classifier: nn.Module, ae_path: str | Path, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Your classifier behind an AE trained by ``aaa fit``: one ``nn.Module`` from [0, 1] images to logits,
    in eval mode, on the classifier's device. With ``input_shape`` (C, H, W), refused, naming the file, when the
    AE was trained on images of another shape; the classifier must map the AE's images to logits."""
    ae, info = load_ae(ae_path)
    device = module_device(classifier)
    ae = ae.to(device)
    shape = tuple(info["meta"].get("input_shape") or INPUT_SHAPES[info["dataset"]])
    if input_shape is not None and tuple(input_shape) != shape:
        raise CheckpointError(f"{ae_path}: trained on images of shape {shape}, these have {tuple(input_shape)}")
    x = torch.zeros(2, *shape, device=device)
    with torch.no_grad():
        out = ae(x)
    if tuple(out.shape) != tuple(x.shape):
        raise CheckpointError(f"{ae_path}: maps {tuple(x.shape)} to {tuple(out.shape)}")
    check_classifier(classifier, shape, None, f"the classifier behind {ae_path}")
    return Defended(ae, classifier).eval()
