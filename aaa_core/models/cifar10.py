"""CIFAR-10 models: the paper's Table 13 (U-Net AE, DNN) and the text's VGG-19 and Madry et al.'s ResNet.

Smaller variants for the cpu scale are built from constructor arguments in params.yaml and named with
those arguments in every table, so a table never shows a small model under the paper's name. Every classifier normalises its input inside.
"""
from __future__ import annotations

import torch
from torch import nn

from aaa_core.models.compose import Normalize

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 train-set channel statistics in [0, 1]
STD = (0.2470, 0.2435, 0.2616)


def conv_bn_pair(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class UNetAE(nn.Module):
    """Table 13's U-Net as the text extraction shows it: conv-bn pairs at 64, 128, 256, 256 (2x2 max-pool
    between them), then three times (2x upscale, concat with the encoder map of that size, conv-bn pair at
    256, 128, 64), then a 1x1 conv to 3 channels with sigmoid. ``width`` scales every channel count."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [max(1, round(width * n)) for n in (64, 128, 256, 256)]
        self.enc = nn.ModuleList([conv_bn_pair(3, c[0]), conv_bn_pair(c[0], c[1]), conv_bn_pair(c[1], c[2]),
                                  conv_bn_pair(c[2], c[3])])
        self.dec = nn.ModuleList([conv_bn_pair(c[3] + c[2], c[2]), conv_bn_pair(c[2] + c[1], c[1]),
                                  conv_bn_pair(c[1] + c[0], c[0])])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.out = nn.Sequential(nn.Conv2d(c[0], 3, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for block, skip in zip(self.dec, reversed(skips[:-1])):
            x = block(torch.cat([self.up(x), skip], 1))
        return self.out(x)


def dnn(width_divisor: int = 1) -> nn.Module:
    """Table 13's DNN: conv 32-3-1, conv 64-3-1, maxpool, dropout, conv 128-3-1, maxpool, conv 128-2-1,
    maxpool, dropout, dense 1500, dropout, dense 10; every width divided by ``width_divisor`` (1 = the paper's).
    In: (N, 3, 32, 32) in [0, 1]; out: (N, 10) logits."""
    c1, c2, c3, h = 32 // width_divisor, 64 // width_divisor, 128 // width_divisor, 1500 // width_divisor
    return nn.Sequential(
        Normalize(MEAN, STD),
        nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.5),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c3, c3, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(c3 * 3 * 3, h), nn.ReLU(), nn.Dropout(0.5), nn.Linear(h, 10),
    )


VGG19_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M"]


def vgg19(width_divisor: int = 1) -> nn.Module:
    """VGG-19 with BatchNorm for 32x32 inputs: the 16 convolutions of Simonyan & Zisserman, one dense layer."""
    layers: list[nn.Module] = [Normalize(MEAN, STD)]
    c_in = 3
    for v in VGG19_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            c_out = v // width_divisor
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in, 10))


class PreActUnit(nn.Module):
    """Pre-activation residual unit of Madry et al.'s CIFAR-10 challenge ResNet."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


def resnet(widen: int = 10, units: int = 5) -> nn.Module:
    """Madry et al.'s CIFAR-10 challenge model: a wide ResNet, 3 stages of ``units`` pre-activation units with
    16 * widen, 32 * widen, 64 * widen filters (widen 10: filters 160, 320, 640)."""
    filters = [16, 16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [Normalize(MEAN, STD), nn.Conv2d(3, filters[0], 3, padding=1, bias=False)]
    for stage in range(3):
        for unit in range(units):
            c_in = filters[stage] if unit == 0 else filters[stage + 1]
            layers.append(PreActUnit(c_in, filters[stage + 1], stride=2 if unit == 0 and stage > 0 else 1))
    layers += [nn.BatchNorm2d(filters[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(filters[3], 10)]
    return nn.Sequential(*layers)


# Smaller cpu-scale variants come from params (scales.<scale>.cifar10.classifier_kwargs, e.g. resnet widen 1);
# tables name a model with its arguments, so a small one never passes for the paper's.
CLASSIFIERS = {"resnet": resnet, "vgg19": vgg19, "dnn": dnn}
AUTOENCODERS = {"ae": UNetAE}
AE_PARAMS = {"width": "width"}  # constructor argument -> field of params.yaml section ae.<dataset>
