"""Building blocks shared by every dataset's zoo: normalisation inside the model, freezing, AE + classifier."""
from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """First layer of every classifier, so that every model takes [0, 1] pixels and eps is in pixel units."""

    def __init__(self, mean: float | tuple[float, ...], std: float | tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def freeze(module: nn.Module) -> nn.Module:
    """Frozen = no parameter takes gradients and BatchNorm statistics stay fixed (eval mode)."""
    module.requires_grad_(False)
    return module.eval()


class EncoderDecoder(nn.Module):
    """An autoencoder made of ``self.encoder`` and ``self.decoder``: encode, decode, and their composition."""

    encoder: nn.Module
    decoder: nn.Module

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class Defended(nn.Module):
    """The AAA pipeline: images in [0, 1] -> AE -> classifier -> logits.

    The classifier is frozen: ``train(True)`` switches only the AE to training mode, so that no
    BatchNorm running statistic of the classifier moves while the AE trains.
    """

    def __init__(self, ae: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.ae = ae
        self.classifier = freeze(classifier)

    def train(self, mode: bool = True) -> "Defended":
        self.training = mode
        self.ae.train(mode)
        self.classifier.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.ae(x))
