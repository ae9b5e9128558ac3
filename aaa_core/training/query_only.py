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

In pixel space (d = 784 on MNIST) an RGE of q = 20 directions has cosine ~0.14 with the true VJP, too little to
train on. The estimate can instead be taken in the AE's latent (as ZO-AE-DS does), with the decoder counted as
part of the black box (``benchmarks/zo_estimator.py``: forward coordinate-wise differences over the latent,
d = 128, cosine 1.000 at 129 queries per image):

- ``LatentZeroOrder(decoder, blackbox, estimator="cge" | "rge", ...)``: z -> blackbox(decoder(z)), backward by
  finite differences of that composite (``cge_vjp``: d queries per image; ``rge_vjp``: q).
- ``LatentAE(ae)`` + ``ThroughLatent(latent_zo)``: the same, shaped for ``train_ae`` unchanged:
  ``train_ae(LatentAE(ae), [ThroughLatent(LatentZeroOrder(ae.decoder, QueryOnly(c), ...))], ce_mse, ...)``
  trains the CE term through the latent estimate into the encoder, the MSE term exactly into encoder and decoder,
  and its training attack is PGD on the latent estimate chained through the (exact) encoder.
- ``ThroughLatent(..., estimate_images=k)`` estimates the update's CE gradient for k images of each batch
  (scaled by n / k): the latent CGE costs d queries per estimated image, so k bounds the cost per iteration.
- ``train_surrogate`` fits a classifier of the defender's own to the black box's answers (one query per image): its
  predicted labels (``fit="labels"``), or its scores, distilled (``fit="scores"``), which gives the surrogate an input
  gradient far closer to the black box's, the more so when each training image is also asked at a random point of
  its eps-ball (``ball``); ``transferred(attack, surrogate)`` runs the training attack through the
  AE and that surrogate: no queries.
- ``SurrogateBlend(slot, surrogate, weight)`` guards the estimated update: the black box's loss, with a gradient
  that is ``weight`` times the surrogate's exact one plus ``1 - weight`` times the estimate.

``aaa fit --access query`` and the black-box study's score-trained AE (stages/train_ae_blackbox.py, surrogate_weight 1)
train white-box against the surrogate distilled from the black box's scores, with no zeroth-order estimate: on the
validation split that beat the label-fitted surrogate and every blend with the latent estimate
(``benchmarks/query_only_pilot.py``); reports/blackbox_mnist.md scores it on the test set against white-box AAA.
Neither asks the eps-ball (``ball``): it aligns the surrogate's gradient better on the validation split
(``benchmarks/surrogate_alignment.py``), but in one run of the study it did not raise the AE's worst case, and it
costs the study a minute it does not have.
``--surrogate-weight`` below 1 blends the latent estimate in.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from aaa_core import distributed
from aaa_core.errors import AAAError
from aaa_core.models.compose import Defended, freeze
from aaa_core.training.loops import Attack, TrainConfig, _batched_mean, train_classifier
from aaa_core.training.loops import fit as fit_loop

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
                                    "queried (ZeroOrder, ThroughLatent or SurrogateBlend estimate gradients from queries)")


class _Queried(nn.Module):
    """What every wrapper around a ``QueryOnly`` black box shares: ``queries`` is the black box's running count,
    and ``train(mode)`` flips only the wrapper's flag (the black box never leaves eval mode; the mode of an AE
    the wrapper refers to is the AE's business)."""

    @property
    def queries(self) -> int:
        return self.blackbox.queries

    def train(self, mode: bool = True):
        self.training = mode
        return self


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


class ZeroOrder(_Queried):
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

    def forward(self, u: Tensor) -> Tensor:
        if torch.is_grad_enabled() and u.requires_grad:
            return _ZeroOrderVJP.apply(u, self.blackbox, self.directions, self.smoothing)
        return self.blackbox.query(u)


def cge_vjp(query, u: Tensor, out: Tensor, w: Tensor, *, smoothing: float, chunk: int = 4096) -> Tensor:
    """Coordinate-wise forward-difference estimate of ``J(u)^T w`` for the black box ``query`` (per example):

        (J^T w)_j  ~  <f(u + mu * e_j) - f(u), w> / mu,   j = 1..d,

    from d extra queries per example (``out = query(u)`` is the base point, already paid for). Deterministic,
    with an O(mu) bias and no sampling variance: exact as mu -> 0 for a smooth f, up to float32 rounding
    (keep mu well above ~1e-4 relative to f's scale). At most ``chunk`` probes are sent per call.
    """
    n, shape, dim = len(u), u.shape[1:], u[0].numel()
    flat = u.detach().float().reshape(1, n, dim)
    base = out.float().reshape(1, n, -1)
    wf = w.float().reshape(1, n, -1)
    grad = torch.empty(n, dim, device=u.device, dtype=torch.float32)
    block = max(1, chunk // max(n, 1))                # coordinates probed per call
    for start in range(0, dim, block):
        k = min(block, dim - start)
        probes = flat.repeat(k, 1, 1)                 # (k, n, dim): probe i moves coordinate start + i
        rows = torch.arange(k, device=u.device)
        probes[rows, :, start + rows] += smoothing
        answers = query(probes.reshape(k * n, *shape)).reshape(k, n, -1)
        grad[:, start:start + k] = (((answers - base) * wf).sum(2) / smoothing).T
    return grad.reshape(u.shape)


Estimator = Literal["cge", "rge"]


class _LatentVJP(torch.autograd.Function):
    """z -> the black box's answer on ``image`` (= decoder(z), computed by the caller without a graph); backward:
    the zeroth-order estimate of J^T w for z -> blackbox(decoder(z)). ``image`` gets no gradient."""

    @staticmethod
    def forward(ctx, z: Tensor, image: Tensor, zo: "LatentZeroOrder") -> Tensor:
        out = zo.blackbox.query(image)
        ctx.zo = zo
        ctx.save_for_backward(z.detach(), out)
        return out

    @staticmethod
    def backward(ctx, w: Tensor):
        z, out = ctx.saved_tensors
        zo = ctx.zo
        if zo.estimator == "cge":
            grad = cge_vjp(zo.query_latent, z, out, w.float(), smoothing=zo.smoothing, chunk=zo.chunk)
        else:
            grad = rge_vjp(zo.query_latent, z, out, w.float(), directions=zo.directions, smoothing=zo.smoothing)
        return grad.to(z.dtype), None, None


class LatentZeroOrder(_Queried):
    """Decoder + ``QueryOnly`` classifier as one black box over the AE's latent, made differentiable by
    zeroth-order estimates taken in the latent (d = latent size) rather than in pixel space.

    ``forward(z)``: ``blackbox.query(decoder(z))``, one query per example. Backward: ``J^T w`` with respect to
    z by finite differences of the composite z -> blackbox(decoder(z)): ``estimator="cge"`` one forward-
    difference probe per latent coordinate (d queries per example, ``cge_vjp``), ``"rge"`` ``directions`` random
    unit directions (``rge_vjp``). Every probe image is one query of ``blackbox`` (``queries``).

    The decoder counts as part of the black box for the estimate: it runs without autograd here, so no gradient
    reaches the decoder's weights through this path (nor the classifier's: it is only queried). Whatever sits
    before z (the encoder, the attack's input through it) gets the estimate by exact backpropagation. The
    decoder is then trained by the terms that see it differentiably: in AE training the reconstruction
    ``x_hat = decoder(z)`` is also computed with autograd for the MSE term, so the CE term reaches the encoder
    only (through this estimate) and the MSE term reaches encoder and decoder exactly (``LatentAE`` and
    ``ThroughLatent`` arrange this inside ``train_ae``).

    The decoder is held by reference, not registered as a submodule: it belongs to the AE being trained, and
    freezing this module (as ``Defended`` freezes its classifier) must not freeze it. It runs in whatever mode
    the AE is in (the MNIST decoder has no dropout or BatchNorm, so the mode does not change its output).
    """

    def __init__(self, decoder: Callable[[Tensor], Tensor], blackbox: QueryOnly, *, estimator: Estimator = "cge",
                 directions: int | None = None, smoothing: float = 0.01, chunk: int = 4096) -> None:
        super().__init__()
        if not isinstance(blackbox, QueryOnly):
            raise TypeError("LatentZeroOrder needs a QueryOnly classifier")
        if estimator not in ("cge", "rge"):
            raise ValueError(f"estimator must be 'cge' or 'rge', got {estimator!r}")
        if estimator == "rge" and (directions is None or directions < 1):
            raise ValueError(f"the RGE needs directions >= 1, got {directions}")
        if estimator == "cge" and directions is not None:
            raise ValueError("the CGE probes every latent coordinate: directions must be None")
        if smoothing <= 0 or chunk < 1:
            raise ValueError(f"smoothing must be > 0 and chunk >= 1, got {smoothing}, {chunk}")
        object.__setattr__(self, "decoder", decoder)      # by reference: see the class docstring
        self.blackbox, self.estimator, self.directions = blackbox, estimator, directions
        self.smoothing, self.chunk = smoothing, chunk

    def decode(self, z: Tensor) -> Tensor:
        """decoder(z) in float32, without a graph (and outside any autocast: a bfloat16 base point would put
        rounding errors of ~1e-2 into differences divided by mu)."""
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            return self.decoder(z.detach().float())

    def query_latent(self, z: Tensor) -> Tensor:
        """The composite black box on latents: decode (no graph) then query, at most ``chunk`` images a call."""
        return torch.cat([self.blackbox.query(self.decode(part)) for part in z.split(self.chunk)])

    def from_latent(self, z: Tensor, image: Tensor | None = None) -> Tensor:
        """The black box's answer for latents ``z`` (``image``: decoder(z) if the caller already has it in float32,
        so the decoder does not run twice), differentiable with respect to z by the zeroth-order estimate."""
        image = self.decode(z) if image is None or image.dtype != torch.float32 else image.detach()
        if torch.is_grad_enabled() and z.requires_grad:
            return _LatentVJP.apply(z, image, self)
        return self.blackbox.query(image)

    def forward(self, z: Tensor) -> Tensor:
        return self.from_latent(z)


LATENT_ATTR = "aaa_latent"    # the attribute by which LatentAE's reconstruction carries its latent
UPDATE_ATTR = "aaa_update"    # ... and whether the AE made it in training mode (the update, not the attack)


class LatentAE(nn.Module):
    """An ``EncoderDecoder`` AE whose reconstruction carries its latent: ``x_hat.aaa_latent = z`` (and
    ``x_hat.aaa_update``: whether the AE is in training mode), so that a ``ThroughLatent`` classifier after it can
    take its zeroth-order estimate in the latent. Otherwise the AE itself (same parameters, same output); ``ae``
    is registered, so the optimizer of ``train_ae`` trains it.
    """

    def __init__(self, ae: nn.Module) -> None:
        super().__init__()
        if not (hasattr(ae, "encode") and hasattr(ae, "decode")):
            raise TypeError("LatentAE needs an autoencoder with encode and decode")
        self.ae = ae

    def forward(self, x: Tensor) -> Tensor:
        z = self.ae.encode(x)
        x_hat = self.ae.decode(z)
        setattr(x_hat, LATENT_ATTR, z)
        setattr(x_hat, UPDATE_ATTR, self.training)
        return x_hat


def _gradient_only(t: Tensor, scale: float) -> Tensor:
    """Zero in value, ``scale`` times ``t``'s gradient in the backward pass: added to a detached value, it gives that
    value with a gradient taken (and weighted) from ``t``."""
    return scale * (t - t.detach())


class ThroughLatent(_Queried):
    """The classifier slot of ``train_ae`` (or ``Defended``) for a latent zeroth-order estimate.

    Given a reconstruction made by ``LatentAE`` (it carries its latent z), returns
    ``latent_zo.from_latent(z, image=x_hat)``: one query per image on x_hat itself, and a backward pass that
    sends the estimate to z (hence exactly through the encoder) and nothing to x_hat, the decoder or the
    classifier. Given any other image it is the plain ``QueryOnly`` black box (a gradient through it raises
    ``BlackBoxGradientError``). Freezing this module freezes nothing of the AE.

    ``estimate_images`` (k) bounds the estimate's cost in the AE's update: for a reconstruction the AE made in
    training mode, only the first k images of the batch get the estimate (batches come shuffled, so they are a
    random k), with their gradient scaled by n / k, which keeps the batch mean's gradient unbiased; the other
    n - k images are queried once each and pass no gradient. The training attack (the AE in eval mode) and
    ``None`` estimate every image.
    """

    def __init__(self, latent_zo: LatentZeroOrder, estimate_images: int | None = None) -> None:
        super().__init__()
        if not isinstance(latent_zo, LatentZeroOrder):
            raise TypeError("ThroughLatent needs a LatentZeroOrder")
        if estimate_images is not None and estimate_images < 1:
            raise ValueError(f"estimate_images must be >= 1 (or None: every image), got {estimate_images}")
        self.latent_zo, self.estimate_images = latent_zo, estimate_images

    @property
    def blackbox(self) -> QueryOnly:
        return self.latent_zo.blackbox

    def forward(self, x_hat: Tensor) -> Tensor:
        z = getattr(x_hat, LATENT_ATTR, None)
        if z is None:
            return self.blackbox(x_hat)
        k, n = self.estimate_images, len(x_hat)
        if k is None or k >= n or not getattr(x_hat, UPDATE_ATTR, False) or not torch.is_grad_enabled():
            return self.latent_zo.from_latent(z, image=x_hat)
        head = self.latent_zo.from_latent(z[:k], image=x_hat[:k])
        return torch.cat([head.detach() + _gradient_only(head, n / k), self.blackbox.query(x_hat[k:])])


class SurrogateBlend(_Queried):
    """The classifier slot of ``train_ae`` that guards a zeroth-order update with a surrogate's exact gradient.

    ``slot`` is the query-only slot (``ThroughLatent`` or ``ZeroOrder``); its answer (the black box's) is what
    this returns, so the loss the AE is trained and validated on is the black box's. The gradient that flows back
    is ``weight`` times the exact VJP through ``surrogate`` (a classifier the defender owns, trained on the black
    box's labels: no query) plus ``1 - weight`` times the slot's estimate, both for the black box's ``w``. Under
    ``torch.no_grad`` (validation) the surrogate does not run. ``weight`` 0 is the slot alone, 1 the surrogate's
    direction with the black box's loss.
    """

    def __init__(self, slot: nn.Module, surrogate: nn.Module, weight: float) -> None:
        super().__init__()
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.slot, self.weight = slot, weight
        object.__setattr__(self, "surrogate", freeze(surrogate))   # not a submodule: it is not trained here

    @property
    def blackbox(self) -> QueryOnly:
        return self.slot.blackbox

    def forward(self, x_hat: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and x_hat.requires_grad) or self.weight == 0:
            return self.slot(x_hat)
        # at weight 1 the estimate would be multiplied by 0: its queries are not spent
        with torch.no_grad() if self.weight == 1 else contextlib.nullcontext():
            answer = self.slot(x_hat)
        exact = self.surrogate(x_hat).float()
        return answer.detach() + _gradient_only(exact, self.weight) + _gradient_only(answer, 1 - self.weight)


@torch.no_grad()
def blackbox_scores(blackbox: QueryOnly, x: Tensor, batch_size: int = 512) -> Tensor:
    """The black box's answer for every image (one query each): its logits, or its log-probabilities (a
    label-fitted surrogate learns their argmax)."""
    return torch.cat([blackbox.query(xb) for xb in x.split(batch_size)])


def score_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared distance between two batches of class scores, each centred per example: logits and
    log-probabilities of one softmax differ by a constant per example, so a black box answering with either
    teaches the same logits (up to that constant, which no prediction or gradient of the loss depends on)."""
    def centred(scores: Tensor) -> Tensor:
        scores = scores.float()
        return scores - scores.mean(1, keepdim=True)
    return (centred(student) - centred(teacher)).pow(2).mean()


Fit = Literal["labels", "scores"]
FITS: tuple[Fit, ...] = ("labels", "scores")


def ball_points(x: Tensor, radius: float, seed: int) -> Tensor:
    """One uniform random point of the L-inf ball of ``radius`` around each image, clipped to [0, 1] (drawn from a
    generator seeded with ``seed``, so a rerun asks the same queries)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + radius * (2 * noise - 1)).clamp(0, 1)


def train_surrogate(blackbox: QueryOnly, surrogate: nn.Module, x: Tensor, x_val: Tensor, cfg: TrainConfig, *,
                    fit: Fit = "scores", ball: float = 0.0,
                    log: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    """Train ``surrogate`` on the black box's answers for the training and validation images, one query each, with
    ``cfg``'s budget. ``fit="labels"``: natural training (``train_classifier``) on its predicted classes, all a
    label-only black box gives. ``"scores"``: distillation of its scores (``score_distance`` to its logits or
    log-probabilities), which on MNIST gives the surrogate an input gradient much closer to the black box's
    (``benchmarks/surrogate_alignment.py``). With ``ball`` > 0 every training image is also asked at one random
    point of its L-inf ball of that radius (``ball_points``), where the attacks the surrogate stands in for search:
    the surrogate trains on both (an epoch covers twice the images) and its gradient there matches the black box's
    better. Returns (the surrogate, frozen in eval mode, what it cost)."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    if ball < 0:
        raise ValueError(f"ball must be >= 0, got {ball}")
    start, before = time.perf_counter(), blackbox.queries
    if ball:
        x = torch.cat([x, ball_points(x, ball, cfg.seed)])
    scores, scores_val = blackbox_scores(blackbox, x), blackbox_scores(blackbox, x_val)
    if fit == "labels":
        history = train_classifier(surrogate, x, scores.argmax(1), x_val, scores_val.argmax(1), cfg, log=log)
    else:
        history = _distil(surrogate, x, scores, x_val, scores_val, cfg, log=log)
    return freeze(surrogate), {"queries": blackbox.queries - before, "fit": fit, "ball": ball, "history": history,
                               "seconds": round(time.perf_counter() - start, 1)}


def _distil(student: nn.Module, x: Tensor, scores: Tensor, x_val: Tensor, scores_val: Tensor, cfg: TrainConfig, *,
            log: Callable[[str], None]) -> list[dict]:
    """``loops.fit`` (Adam, the plateau schedule) of ``student`` on ``score_distance`` to the teacher's ``scores``,
    as ``train_classifier`` runs natural training (under DDP too). Without augmentation, whatever ``cfg`` says: the
    scores are the teacher's answers for the images as they were queried, not for crops or flips of them."""
    cfg = dataclasses.replace(cfg, augment=False)
    net = distributed.wrap(student)
    x_val, scores_val = distributed.shard_rows(x_val, scores_val)

    def step(xb: Tensor, sb: Tensor, generator: torch.Generator, iteration: int) -> Tensor:   # noqa: ARG001
        student.train()
        return score_distance(net(xb), sb)

    def val_loss(generator: torch.Generator) -> float:   # noqa: ARG001
        student.eval()
        with torch.no_grad():
            return _batched_mean(lambda xb, sb: score_distance(student(xb), sb), x_val, scores_val, cfg.batch_size)
    return fit_loop(student, step, val_loss, x, scores, cfg, log=log)


def input_gradient_cosine(model: nn.Module, reference: nn.Module, x: Tensor, y: Tensor,
                          batch_size: int = 256) -> float:
    """Mean over examples of the cosine between the input gradients of the cross-entropy through ``model`` and
    through ``reference``: how well a surrogate points where the classifier's own gradient does (an evaluation
    that reads the reference white-box, never part of query-only training)."""
    total = 0.0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        grads = []
        for net in (model, reference):
            leaf = xb.detach().float().clone().requires_grad_()
            grad, = torch.autograd.grad(nn.functional.cross_entropy(net(leaf).float(), yb, reduction="sum"), leaf)
            grads.append(grad.flatten(1))
        total += nn.functional.cosine_similarity(*grads, dim=1).sum().item()
    return total / len(x)


def transferred(attack: Attack, surrogate: nn.Module) -> Attack:
    """A training attack (``attack(pipeline, x, y, generator, strength)``, as ``train_ae`` calls it) run through
    the pipeline's AE and ``surrogate`` instead of its classifier: white-box PGD on a model the defender owns,
    whose examples then meet the black box. It costs no query."""
    def through_surrogate(pipeline, x: Tensor, y: Tensor, generator: torch.Generator, strength: float) -> Tensor:
        return attack(Defended(pipeline.ae, surrogate), x, y, generator, strength)
    return through_surrogate
