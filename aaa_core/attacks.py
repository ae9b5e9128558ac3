"""L-inf PGD (Madry et al., 2018) as plain functions over any ``nn.Module`` from [0, 1] images to logits.

Conventions shared by every function here:
- gradients are taken with ``torch.autograd.grad`` with respect to the input only, so no ``.grad`` is left
  on any model parameter;
- the model's train/eval mode is never changed: the caller decides (AAA attacks in eval mode);
- randomness comes from an explicit ``torch.Generator``; no global RNG is re-seeded;
- projection is two clamps: the perturbation into [-eps, eps], then the image into [0, 1].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossName = Literal["ce", "margin"]


@dataclass(frozen=True)
class PGDConfig:
    """One L-inf PGD attack, fully named (what every metrics file records beside its numbers)."""

    eps: float
    alpha: float
    steps: int
    restarts: int = 1
    random_start: bool = True
    loss: LossName = "ce"
    norm: str = "linf"

    def describe(self) -> dict:
        return asdict(self)


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin: best wrong logit minus true logit (positive = misclassified), per example."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return wrong - true


ATTACK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ce": lambda logits, y: F.cross_entropy(logits, y, reduction="none"),
    "margin": margin_loss,
}


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clamp into the eps ball around x, then into the image range [0, 1]."""
    return torch.clamp(x + torch.clamp(x_adv - x, -eps, eps), 0.0, 1.0)


def random_start_linf(x: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
    return project_linf(x + eps * noise, x, eps)


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
        random_start: bool = True, loss: LossName = "ce",
        generator: torch.Generator | None = None) -> Tensor:
    """L-inf PGD on the whole ``model``; returns the final iterate (the training attack).

    Shape: x (N, C, H, W) in [0, 1], y (N,). Returns a detached x_adv with ``|x_adv - x|_inf <= eps``.
    """
    return _pgd_loop(model, x, y, eps, alpha, steps, random_start, loss, generator, track=False, record_at=())[0]


def pgd_iterates(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, at: Sequence[int],
                 random_start: bool = True, loss: LossName = "ce",
                 generator: torch.Generator | None = None) -> dict[int, Tensor]:
    """The iterates of one PGD run after each step count in ``at``: {k: x_adv after k steps}.

    The iterate after k steps of a longer run is the final iterate of ``pgd(..., steps=k)`` with an equally
    seeded generator, so one run serves every step count (e.g. the paper's PGD-40 and PGD-200).
    """
    if not at:
        raise ValueError("at must name at least one step count")
    return _pgd_loop(model, x, y, eps, alpha, max(at), random_start, loss, generator, track=False,
                     record_at=at)[1]


def pgd_until_fooled(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
                     random_start: bool = True, loss: LossName = "ce",
                     generator: torch.Generator | None = None,
                     record_at: Sequence[int] = ()) -> tuple[Tensor, dict[int, Tensor]]:
    """The same PGD, freezing each example at the first iterate that fools the model (the evaluation attack).

    Freezing an example once it is misclassified only drops work: the frozen point is a valid adversarial
    example inside the ball, so robust accuracy is the fraction never fooled at any iterate up to ``steps``
    (as in the evaluation code of Wong et al.). ``record_at`` lists step counts k <= steps at which to record
    the per-example "still correct" flags, so one run gives PGD-40 and PGD-200 from the same random start.

    Returns (x_adv, {k: correct flags after k steps}), with ``steps`` always among the keys.
    """
    return _pgd_loop(model, x, y, eps, alpha, steps, random_start, loss, generator, track=True,
                     record_at=record_at)


def _pgd_loop(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
              random_start: bool, loss: LossName, generator: torch.Generator | None, track: bool,
              record_at: Sequence[int]) -> tuple[Tensor, dict[int, Tensor]]:
    """The one PGD loop. Returns (final iterate, recorded): with ``track`` (freeze each example once fooled)
    recorded[k] holds the "never fooled up to step k" flags; without it, the iterate after k steps."""
    if any(k < 0 or k > steps for k in record_at):
        raise ValueError(f"record_at={list(record_at)} must lie within 0..steps={steps}")
    loss_fn = ATTACK_LOSSES[loss]
    x = x.detach()
    if eps == 0 or steps == 0:
        x_adv = x.clone()
    elif random_start:
        x_adv = random_start_linf(x, eps, generator)
    else:
        x_adv = x.clone()
    # examples still attacked (track: the not-yet-fooled ones; otherwise all, without gather or scatter)
    active = torch.arange(len(x), device=x.device)
    correct = torch.ones(len(x), dtype=torch.bool, device=x.device)
    recorded: dict[int, Tensor] = {}
    last = 0 if eps == 0 else steps
    for step in range(last + 1):
        if not track:
            if step in record_at:
                recorded[step] = x_adv    # never written in place below: x_adv is replaced each step
            if step == last:
                break
        xa = (x_adv[active] if track else x_adv.detach()).requires_grad_(step < last)
        xs, ys = (x[active], y[active]) if track else (x, y)
        with torch.set_grad_enabled(step < last):
            logits = model(xa)
        if track:
            fooled = logits.argmax(1) != ys
            correct[active[fooled]] = False
            if step in record_at:
                recorded[step] = correct.clone()
        if step == last:
            break
        grad, = torch.autograd.grad(loss_fn(logits, ys).sum(), xa)
        stepped = project_linf(xa.detach() + alpha * grad.sign(), xs, eps)
        if track:
            keep = ~fooled
            x_adv[active[keep]] = stepped[keep]
            active = active[keep]
            if len(active) == 0:
                break
        else:
            x_adv = stepped
    for k in ({*record_at, steps} if track else set(record_at)):
        # with eps 0 the loop stops at step 0: every later iterate equals the clean input
        recorded.setdefault(k, correct.clone() if track else x_adv)
    return x_adv.detach(), recorded
