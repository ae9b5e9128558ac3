"""Fashion-MNIST models of the paper's Table 12 (kernel-filters-stride; ReLU unless said otherwise)."""
from __future__ import annotations

from torch import nn

from aaa_core.models.compose import EncoderDecoder, Normalize

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST train-set pixel statistics in [0, 1]


def conv_bn_pair(c_in: int, c_out: int) -> list[nn.Module]:
    """Table 12's "conv-bn 2": two 3x3 convolutions, each followed by BatchNorm and ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class ConvAE(EncoderDecoder):
    """15 convolutions: conv-bn pairs at 32, 64 (each then max-pooled), 128, 256 | 128, 64, upscale, 32,
    upscale, conv 1 + sigmoid. The latent is the 256-channel 7x7 map (12,544 numbers); ``width`` scales
    every channel count (1.0 = the paper's)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [max(1, round(width * n)) for n in (32, 64, 128, 256)]
        self.encoder = nn.Sequential(*conv_bn_pair(1, c[0]), nn.MaxPool2d(2), *conv_bn_pair(c[0], c[1]),
                                     nn.MaxPool2d(2), *conv_bn_pair(c[1], c[2]), *conv_bn_pair(c[2], c[3]))
        self.decoder = nn.Sequential(*conv_bn_pair(c[3], c[2]), *conv_bn_pair(c[2], c[1]),
                                     nn.Upsample(scale_factor=2), *conv_bn_pair(c[1], c[0]),
                                     nn.Upsample(scale_factor=2), nn.Conv2d(c[0], 1, 3, padding=1), nn.Sigmoid())


def dnn() -> nn.Module:
    """The "DNN" of Table 12: conv 32-3-1 x2, maxpool, conv 64-3-1 x2, maxpool, dense 1024, dense 10."""
    return nn.Sequential(
        Normalize(MEAN, STD),
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10),
    )


def fc() -> nn.Module:
    """The "FC" transfer classifier of Table 12: dense 1024, 512, 256, 10."""
    return nn.Sequential(
        Normalize(MEAN, STD), nn.Flatten(),
        nn.Linear(28 * 28, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )


CLASSIFIERS = {"dnn": dnn, "fc": fc}
AUTOENCODERS = {"ae": ConvAE}
AE_PARAMS = {"width": "width"}  # constructor argument -> field of params.yaml section ae.<dataset>
