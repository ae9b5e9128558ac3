"""MNIST models of the paper's Table 11 (kernel-filters-stride; ReLU unless said otherwise)."""
from __future__ import annotations

from torch import nn

from aaa_core.models.compose import EncoderDecoder, Normalize

MEAN, STD = 0.1307, 0.3081  # MNIST train-set pixel statistics in [0, 1]


class ConvAE(EncoderDecoder):
    """conv 32-3-2, conv 64-3-2, dense latent (no activation), dense 7*7*64, deconv 32-3-2, deconv 1-3-2 + sigmoid.

    The paper's text says a latent of 128, its Table 11 says 1024; ``latent_dim`` defaults to the text's 128.
    """

    def __init__(self, latent_dim: int = 128) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(7 * 7 * 64, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 7 * 7 * 64), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid(),
        )


def dnn() -> nn.Module:
    """The "DNN" of Table 11: conv 32-3-1, maxpool, conv 64-3-1, maxpool, dense 1024, dense 10."""
    return nn.Sequential(
        Normalize(MEAN, STD),
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10),
    )


def fc() -> nn.Module:
    """The "FC" transfer classifier of Table 11: dense 256, dense 256, dense 10."""
    return nn.Sequential(
        Normalize(MEAN, STD), nn.Flatten(),
        nn.Linear(28 * 28, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10),
    )


CLASSIFIERS = {"dnn": dnn, "fc": fc}
AUTOENCODERS = {"ae": ConvAE}
AE_PARAMS = {"latent_dim": "latent_dim"}  # constructor argument -> field of params.yaml section ae.<dataset>
