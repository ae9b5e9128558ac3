"""AAA for your own classifier and data: load a classifier from ``module:factory``, read an image-folder
dataset, train an AE for it (with gradients or through queries only), save it, and load it back in front
of the classifier. Used by the ``aaa`` command (``aaa_core.cli``); usable from Python as well::

    from aaa_core.custom import defend, load_classifier
    model = defend(load_classifier("torchvision.models:resnet18", weights="my.pt"), "ae.pt")   # AE + classifier

The DVC study does not depend on this module.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aaa_core import INPUT_SHAPES
from aaa_core.checkpoints import REDO, _check_description, _rebuild, load_torch, save_torch, weights_sha256
from aaa_core.errors import AAAError, CheckpointError, DataFileError
from aaa_core.models import Defended
from aaa_core.models.compose import EncoderDecoder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class UserInputError(AAAError):
    """A classifier spec, weights file or image folder that cannot be used as given."""


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


# ---- your data ----

def read_image_folder(path: str | Path, *, channels: int | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """An image-folder tree (``<class>/<image>``, torchvision's ImageFolder layout) as float images in [0, 1]
    (N, C, H, W), int64 labels and the class names. Every image must have the same size; ``channels`` 1 or 3
    (default: 1 if the first image is grayscale, else 3)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise DataFileError(f"{root}: expected a folder of class folders (<class>/<image>), found none")
    files = [(f, label) for label, name in enumerate(classes)
             for f in sorted((root / name).rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataFileError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    images, labels, size = [], [], None
    for f, label in files:
        try:
            with Image.open(f) as img:
                if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    raise DataFileError(f"{f}: a {img.mode} ({'16-bit' if img.mode.startswith('I') else 'float'}) "
                                        "image; convert your images to 8 bits per channel")
                if channels is None:
                    channels = 1 if img.mode in ("1", "L", "LA") else 3
                img = img.convert("L" if channels == 1 else "RGB")
                array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
                shape = (img.height, img.width, channels)
        except (UnidentifiedImageError, OSError) as err:
            raise DataFileError(f"{f}: not a readable image ({err})") from None
        if size is None:
            size = shape
        elif shape != size:
            raise DataFileError(f"{f}: {shape[1]}x{shape[0]} pixels, expected {size[1]}x{size[0]} like the first "
                                "image: resize your images to one size")
        images.append(array.view(*shape).permute(2, 0, 1))
        labels.append(label)
    # read on the CPU (the caller moves the tensors to its device)
    return torch.stack(images).float().div_(255), torch.tensor(labels, device="cpu"), classes


def load_folder_dataset(path: str | Path, *, seed: int = 0, test_fraction: float = 0.2) -> dict:
    """``PATH/train`` and ``PATH/test`` (each an image folder), or one image folder split at random (seeded)
    into train and test. Same keys as a prepared dataset: x_train, y_train, x_test, y_test, label, classes; on
    the CPU, and the split drawn there, so that it is the same whatever device the data go to next."""
    root = Path(path)
    if (root / "train").is_dir() and (root / "test").is_dir():
        x, y, classes = read_image_folder(root / "train")
        x_test, y_test, test_classes = read_image_folder(root / "test", channels=x.shape[1])
        if test_classes != classes:
            raise DataFileError(f"{root}/test: classes {test_classes} differ from {root}/train's {classes}")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataFileError(f"{root}/test: images of {tuple(x_test.shape[1:])}, expected {tuple(x.shape[1:])} "
                                f"like {root}/train's")
        # folders are read class by class: shuffle (seeded) so that the first n test images span the classes
        order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(seed), device="cpu")
        x_test, y_test = x_test[order], y_test[order]
    else:
        images, labels, classes = read_image_folder(root)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed), device="cpu")
        n_test = max(1, round(test_fraction * len(images)))
        x, y = images[order[n_test:]], labels[order[n_test:]]
        x_test, y_test = images[order[:n_test]], labels[order[:n_test]]
    return {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test, "classes": classes,
            "label": f"folder {root}", "source": str(root)}


# ---- the AE ----

class ConvAE(EncoderDecoder):
    """A small convolutional AE for images of any size divisible by 4 and any channel count: conv 32-3-2,
    conv 64-3-2 (the latent: a 64-channel map at a quarter of the resolution), and the mirror image with a
    sigmoid output. The AE used for datasets outside the paper's three."""

    def __init__(self, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())


GENERIC = "conv_ae"


def build_ae(dataset: str, shape: tuple[int, ...], zoo_kwargs: dict | None = None) -> tuple[nn.Module, str, dict]:
    """(AE, arch, kwargs): the paper's AE of a named dataset, otherwise ``ConvAE`` for the images' shape."""
    from aaa_core.models import build

    if dataset in INPUT_SHAPES:
        kwargs = dict(zoo_kwargs or {})
        return build(dataset, "ae", **kwargs), "ae", kwargs
    channels, height, width = shape
    if height % 4 or width % 4:
        raise UserInputError(f"images of {height}x{width} pixels: the generic AE needs both sides divisible by 4")
    kwargs = {"channels": channels}
    return ConvAE(**kwargs), GENERIC, kwargs


def save_ae(ae: nn.Module, path: str | Path, *, dataset: str, arch: str, arch_kwargs: dict,
            input_shape: tuple[int, ...], **meta: Any) -> None:
    """A self-describing AE checkpoint; the paper's datasets' AEs are ordinary ``load_model`` checkpoints.
    The weights are saved from the CPU whatever device the AE trained on, so the file loads anywhere."""
    state = {name: tensor.detach().cpu() for name, tensor in ae.state_dict().items()}
    save_torch({"kind": "ae", "dataset": dataset, "arch": arch, "arch_kwargs": arch_kwargs,
                "meta": {**meta, "input_shape": list(input_shape)}, "weights_sha256": weights_sha256(state),
                "state_dict": state}, path)


def load_ae(path: str | Path) -> tuple[nn.Module, dict]:
    """An AE written by ``aaa fit`` (or a stage), in eval mode, with its description: the checks of
    ``load_model`` (kind, weights' sha256), then the registry's AE or, for a folder dataset, ``ConvAE``."""
    path = Path(path)
    ckpt = load_torch(path, what="model checkpoint")
    _check_description(path, ckpt, "ae", None)
    if ckpt["arch"] == GENERIC:
        ae = ConvAE(**ckpt["arch_kwargs"])
        try:
            ae.load_state_dict(ckpt["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: its weights do not fit {GENERIC} with {ckpt['arch_kwargs']}; {REDO}") from err
    else:
        ae = _rebuild(path, ckpt)
    return ae.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


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
