"""A tripwire for query-only tests: an identity whose backward pass raises, so that any gradient taken through the
classifier it guards fails the test."""
from __future__ import annotations

import torch


class TripwireError(RuntimeError):
    pass


class _Tripwire(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise TripwireError("a gradient went through the classifier")


def tripwire(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged; backpropagating through the result raises ``TripwireError``."""
    return _Tripwire.apply(x)
