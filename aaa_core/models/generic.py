"""A generic convolutional AE (``ConvAE``) for any image shape, and its self-describing checkpoint: what
`aaa fit` trains in front of a classifier that is not one of the study's."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from aaa_core import INPUT_SHAPES
from aaa_core.errors import CheckpointError, UserInputError
from aaa_core.io import REDO, load_torch, save_torch
from aaa_core.models.checkpoints import _check_description, _rebuild, weights_sha256
from aaa_core.models.compose import EncoderDecoder

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
    ckpt = load_torch(path, what="model checkpoint", error=CheckpointError)
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
