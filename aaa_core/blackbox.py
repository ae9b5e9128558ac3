"""Query-only (black-box) access to a classifier, and the zeroth-order gradient that trains an AE through it.

The paper names black-box training as future work: the defender can query the classifier (read its
logits or probabilities) but not differentiate through it. Two pieces make every training loop of
``aaa_core.training`` work unchanged under that restriction:

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

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import yaml
from torch import Tensor, nn

from aaa_core.config import Count, ParamsError, Range, Size, Step, _build
from aaa_core.errors import AAAError
from aaa_core.training import TrainConfig, pretrain_ae  # noqa: F401  (pretrain_ae: used by the study's stages)

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



# ---- the black-box study's own knobs: blackbox.yaml, a DVC params file beside params.yaml ----

OUTPUTS = ("logits", "probs")


@dataclass(frozen=True)
class BlackboxConfig:
    """One AE training budget shared by the black-box study's four trainings; the training attack's steps
    and step are params.yaml's ``adversarial.<dataset>``."""
    epochs: Count
    epoch_images: Size         # images drawn per epoch (0 = all)
    eps_ramp: Size             # iterations over which the training eps grows linearly from 0
    warm_epochs: Size          # epochs of clean reconstruction before adversarial training (0 = none)
    directions: Count          # q: random directions per zeroth-order gradient (q queries per image)
    smoothing: Step            # mu: the L2 length of each probe's perturbation
    output: str                # what the black box returns: logits or probs
    surrogate: str             # the surrogate's architecture (of the dataset's zoo)


def load_blackbox(path: str | Path, dataset: str, scale: str) -> BlackboxConfig:
    """``<dataset>`` of the blackbox params file with ``scales.<scale>.<dataset>`` laid over it, checked like
    params.yaml: an unknown, missing, mistyped or out-of-range key stops the stage with one line naming it."""
    from aaa_core.models import is_autoencoder, list_models

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {getattr(err, 'problem', None) or err}") from None
    try:
        if not isinstance(raw, dict) or not isinstance(raw.get(dataset), dict):
            raise ParamsError(f"params: no {dataset} section")
        overlay = ((raw.get("scales") or {}).get(scale) or {}).get(dataset) or {}
        names = {k: f"scales.{scale}.{dataset}.{k}" for k in overlay}
        cfg = _build(BlackboxConfig, {**raw[dataset], **overlay}, dataset, names)
        if cfg.output not in OUTPUTS:
            raise ParamsError(f"params: {dataset}.output = {cfg.output!r}: expected one of {', '.join(OUTPUTS)}")
        if cfg.surrogate not in list_models(dataset) or is_autoencoder(dataset, cfg.surrogate):
            raise ParamsError(f"params: {dataset}.surrogate = {cfg.surrogate!r}: expected a classifier of the "
                              f"{dataset} zoo")
        return cfg
    except ParamsError as err:
        raise ParamsError(f"{path}: {str(err).removeprefix('params: ')}") from None
