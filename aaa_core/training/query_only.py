"""Query-only (black-box) access to a classifier, and the zeroth-order gradient that trains an AE through it.

The paper names black-box training as future work: the defender can query the classifier (read its
logits or probabilities) but not differentiate through it. Two pieces make every training loop of
``aaa_core.training.loops`` work unchanged under that restriction:

- ``QueryOnly`` wraps the classifier: its output comes back detached, every input image counts as one
  query, and any attempt to backpropagate through it raises ``BlackBoxGradientError``.
- ``ZeroOrder`` puts a query-only classifier back into autograd: its forward is one query per image, its
  backward estimates the vector-Jacobian product ``J(u)^T w`` (w: the gradient arriving at the logits)
  with random-direction finite differences (RGE, as ZO-AE-DS, Zhang et al., ICLR 2022):

      J^T w  ~  d / (q * mu) * sum_i <f(u + mu * v_i) - f(u), w> v_i,   v_i uniform on the unit sphere,

  with d the input dimension, q directions and smoothing mu: q extra queries per image. Everything upstream
  of the classifier (the AE, the attack's input) still gets exact gradients by backpropagation, so the
  estimate is taken with respect to the AE's output and chained into the AE.

So ``train_ae(ae, [ZeroOrder(QueryOnly(classifier))], ...)`` is AAA trained through a black box: the
training attack is PGD on the zeroth-order gradient, and the AE's cross-entropy term is updated with it.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from aaa_core.errors import AAAError

Output = Literal["logits", "probs"]


class BlackBoxGradientError(AAAError):
    """Something tried to differentiate through a classifier that may only be queried."""


class _Blocked(torch.autograd.Function):
    """Identity on the black box's (detached) output that refuses to pass a gradient back to the input."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor) -> Tensor:   # noqa: ARG004 (x only links the graph)
        return out.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        raise BlackBoxGradientError("a gradient was requested through a query-only classifier: it can only be "
                                    "queried (wrap it in ZeroOrder to estimate gradients from queries)")


class QueryOnly(nn.Module):
    """A classifier that can only be queried: what a deployed model behind an API gives its users.

    ``output="logits"`` returns its logits, ``"probs"`` the log of its softmax probabilities (cross-entropy
    treats those exactly as logits, so a loss written for logits needs no change). Outputs are float32,
    computed without autograd; ``queries`` counts the images sent. The wrapped model is frozen.
    """

    def __init__(self, model: nn.Module, output: Output = "logits") -> None:
        super().__init__()
        if output not in ("logits", "probs"):
            raise ValueError(f"output must be 'logits' or 'probs', got {output!r}")
        self.model = model.requires_grad_(False).eval()
        self.output = output
        self.queries = 0

    def train(self, mode: bool = True) -> "QueryOnly":
        self.training = mode          # the black box itself never leaves eval mode
        return self

    def query(self, x: Tensor) -> Tensor:
        """The black box's answer for a batch, as a plain tensor (float32, no graph)."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            out = self.model(x.detach().float()).float()
        self.queries += len(x)
        if self.output == "probs":
            out = torch.log_softmax(out, dim=1)
        return out

    def forward(self, x: Tensor) -> Tensor:
        out = self.query(x)
        return _Blocked.apply(x, out) if torch.is_grad_enabled() and x.requires_grad else out


class _ZeroOrderVJP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, blackbox: QueryOnly, directions: int, smoothing: float) -> Tensor:
        out = blackbox.query(u)
        ctx.blackbox, ctx.directions, ctx.smoothing = blackbox, directions, smoothing
        ctx.save_for_backward(u.detach(), out)
        return out

    @staticmethod
    def backward(ctx, w: Tensor):
        u, out = ctx.saved_tensors
        grad = rge_vjp(ctx.blackbox.query, u, out, w.float(), directions=ctx.directions, smoothing=ctx.smoothing)
        return grad.to(u.dtype), None, None, None


def rge_vjp(query, u: Tensor, out: Tensor, w: Tensor, *, directions: int, smoothing: float,
            generator: torch.Generator | None = None) -> Tensor:
    """Random-direction estimate of ``J(u)^T w`` for the black box ``query`` (per example), from
    ``directions`` extra queries per example; ``out = query(u)``.

    Directions are uniform on the unit sphere of each example's input (drawn from ``generator``, by default
    torch's global one, so a resumed training run draws what the uninterrupted one would). The estimate is
    unbiased for the gradient of the mu-smoothed function, and exact in the mean for a quadratic one.
    """
    n, shape = len(u), u.shape[1:]
    dim = u[0].numel()
    v = torch.randn((directions, n, dim), generator=generator, device=u.device, dtype=torch.float32)
    v = v / v.norm(dim=2, keepdim=True)
    probes = (u.float().reshape(1, n, dim) + smoothing * v).reshape(directions * n, *shape)
    answers = query(probes).reshape(directions, n, -1)
    slopes = ((answers - out.reshape(1, n, -1)) * w.reshape(1, n, -1)).sum(2) / smoothing   # (q, n)
    return (dim / directions) * (slopes[..., None] * v).sum(0).reshape(u.shape)


class ZeroOrder(nn.Module):
    """A ``QueryOnly`` classifier made differentiable by zeroth-order estimates (see the module docstring).

    Forward: one query per image. Backward: ``directions`` queries per image, an RGE estimate of the
    vector-Jacobian product. ``queries`` is the black box's running count.
    """

    def __init__(self, blackbox: QueryOnly, *, directions: int, smoothing: float) -> None:
        super().__init__()
        if not isinstance(blackbox, QueryOnly):
            raise TypeError("ZeroOrder needs a QueryOnly classifier")
        if directions < 1 or smoothing <= 0:
            raise ValueError(f"directions must be >= 1 and smoothing > 0, got {directions}, {smoothing}")
        self.blackbox, self.directions, self.smoothing = blackbox, directions, smoothing

    @property
    def queries(self) -> int:
        return self.blackbox.queries

    def train(self, mode: bool = True) -> "ZeroOrder":
        self.training = mode
        return self

    def forward(self, u: Tensor) -> Tensor:
        if torch.is_grad_enabled() and u.requires_grad:
            return _ZeroOrderVJP.apply(u, self.blackbox, self.directions, self.smoothing)
        return self.blackbox.query(u)


@torch.no_grad()
def blackbox_labels(blackbox: QueryOnly, x: Tensor, batch_size: int = 512) -> Tensor:
    """The black box's predicted class for every image (one query each): a surrogate's training labels."""
    return torch.cat([blackbox.query(xb).argmax(1) for xb in x.split(batch_size)])
