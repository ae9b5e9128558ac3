"""kNN latent reconstruction: replace an input's latent by the mean of its k nearest training latents.

Exact search is a matrix product: ``|q - b|^2 = |q|^2 - 2 q.b + |b|^2``, computed in query chunks, with
``topk`` per chunk. 10,000 queries against 60,000 latents of 12,544 dimensions (Fashion-MNIST) is about
15 TFLOP, so it runs at the machine's matrix-product rate (``benchmarks/knn.py`` prints both).

The kNN step is piecewise constant in the input: its gradient is zero almost everywhere, so a plain
white-box attack through it is blind. ``KNNDefended(..., bpda=True)`` gives the straight-through (BPDA,
Athalye et al. 2018) gradient: forward through the kNN mean, backward as if the latent passed unchanged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from aaa_core.attacks import PGDConfig, pgd_iterates
from aaa_core.evaluate import ROUNDING, Check, correct_flags, robust_flags
from aaa_core.models import Defended
from aaa_core.runtime import attack_seed, generator as make_generator


@torch.no_grad()
def knn_indices(queries: Tensor, bank: Tensor, k: int, *, chunk: int = 1024,
                bank_sq: Tensor | None = None) -> Tensor:
    """Indices (Q, k) of the k nearest rows of ``bank`` (N, D) to each row of ``queries`` (Q, D), exact, L2.

    Ties and order: the k nearest in ascending distance, as ``topk`` returns them.
    """
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, the bank {bank.shape[1]}")
    if not 0 < k <= len(bank):
        raise ValueError(f"k={k} must be in 1..{len(bank)} (the bank size)")
    queries, bank = queries.float(), bank.float()
    bank_sq = (bank * bank).sum(1) if bank_sq is None else bank_sq
    out = []
    for q in queries.split(chunk):
        # |q|^2 is the same for every bank row of a query, so it does not change the ranking.
        dist = torch.addmm(bank_sq, q, bank.T, beta=1.0, alpha=-2.0)
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


class LatentBank(nn.Module):
    """The latents of the training set, flattened, and their squared norms (kept for every search)."""

    def __init__(self, latents: Tensor, k: int = 10) -> None:
        super().__init__()
        flat = latents.detach().float().flatten(1)
        self.latent_shape = tuple(latents.shape[1:])
        self.k = k
        self.register_buffer("latents", flat)
        self.register_buffer("sq_norms", (flat * flat).sum(1))

    def neighbour_mean(self, z: Tensor, chunk: int = 1024) -> Tensor:
        """Mean of the k nearest bank latents of each row of z, in z's shape; no gradient flows to z."""
        idx = knn_indices(z.detach().flatten(1), self.latents, self.k, chunk=chunk, bank_sq=self.sq_norms)
        return self.latents[idx].mean(1).view(len(z), *self.latent_shape).to(z.dtype)


@torch.no_grad()
def encode_all(ae: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    ae.eval()
    return torch.cat([ae.encode(xb) for xb in x.split(batch_size)])


class KNNDefended(nn.Module):
    """images -> encode -> mean of the k nearest training latents -> decode -> classifier -> logits.

    ``bpda=False``: the true pipeline (its input gradient is zero: the kNN output does not depend on x
    continuously). ``bpda=True``: the same forward values, with the straight-through gradient
    d(kNN mean)/dz := identity, which is how an adaptive attacker differentiates through the kNN step.
    """

    def __init__(self, ae: nn.Module, classifier: nn.Module, bank: LatentBank, *, bpda: bool = False) -> None:
        super().__init__()
        self.ae, self.classifier, self.bank, self.bpda = ae, classifier, bank, bpda

    def forward(self, x: Tensor) -> Tensor:
        z = self.ae.encode(x)
        z_knn = self.bank.neighbour_mean(z)
        if self.bpda:
            z_knn = z + (z_knn - z).detach()
        else:
            z_knn = z_knn + 0.0 * z   # the true derivative: zero (kept in the graph so attacks can run)
        return self.classifier(self.ae.decode(z_knn))



@dataclass
class KNNReport:
    """What ``knn_protocol`` measured: per-example flags and their accuracies, the checks, the timings."""
    natural: Tensor                        # AE + kNN on the clean images
    plain_natural: Tensor                  # the plain AE (no kNN) on the same images
    flags: dict[str, dict[int, Tensor]]   # attack name -> step count -> still correct
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    square: Tensor | None = None           # Square (query-only) on the true kNN pipeline: still correct
    square_queries: int = 0

    def robust_accuracy(self) -> dict:
        acc = {name: {f"pgd{k}": f.float().mean().item() for k, f in by_steps.items()}
               for name, by_steps in self.flags.items()}
        if self.square is not None:
            acc["square"] = {f"queries{self.square_queries}": self.square.float().mean().item()}
        return acc

    def square_only(self) -> dict:
        """Per step count: examples Square fools that both gradient attacks (non-adaptive, BPDA) missed."""
        if self.square is None:
            return {}
        return {f"pgd{k}": int((self.flags["non_adaptive"][k] & self.flags["bpda"][k] & ~self.square).sum())
                for k in self.flags["bpda"]}


def knn_protocol(ae: nn.Module, classifier: nn.Module, bank: LatentBank, x: Tensor, y: Tensor, *, eps: float,
                 alpha: float, steps: list[int], bpda_tolerance: float, seed: int,
                 square_queries: int = 0) -> KNNReport:
    """AAA + kNN (Tables 9 and 10) attacked two ways on (x, y), with the plain AE beside it on the same examples.

    (1) non-adaptive, the paper's protocol: PGD crafted on AE + classifier without the kNN step (final iterate
    at each step count), classified with it; (2) BPDA: PGD with the straight-through gradient through the kNN
    step, robust = never fooled at any iterate; (3) with ``square_queries`` > 0, Square (query-only, margin
    loss, torchattacks) on the true kNN pipeline, which needs no gradient, so a straight-through gradient
    that misleads BPDA cannot hide robustness from it; (4) the per-example worst case of all of them. The
    plain AE is scored on the very adversarial examples of (1), so kNN and plain AE are compared example for
    example. Check: BPDA is not weaker than the non-adaptive attack by more than ``bpda_tolerance`` (else the
    BPDA attack is broken). ``KNNReport.square_only`` counts what Square found that the gradient attacks did
    not (reported, and in the worst case; not a stage failure: the worst case already includes it).
    """
    target = KNNDefended(ae, classifier, bank).eval()
    straight = KNNDefended(ae, classifier, bank, bpda=True).eval()
    plain = Defended(ae, classifier).eval()
    steps = sorted(steps)
    seconds = {}
    t = time.perf_counter()
    natural = correct_flags(target, x, y)
    seconds["natural_eval"] = time.perf_counter() - t
    # one run gives every step count's final iterate (the same as separate runs: tests/test_attacks.py)
    # each attack its own seed (aaa_core.runtime.attack_seed); one generator over all batches
    gen_plain = make_generator(attack_seed(seed, "knn-non-adaptive"), x.device)
    iterates = [pgd_iterates(plain, xb, yb, eps=eps, alpha=alpha, at=steps, generator=gen_plain)
                for xb, yb in zip(x.split(256), y.split(256))]
    adversarial = {k: torch.cat([it[k] for it in iterates]) for k in steps}
    non_adaptive = {k: correct_flags(target, adversarial[k], y) for k in steps}
    plain_ae = {k: correct_flags(plain, adversarial[k], y) for k in steps}
    adaptive = robust_flags(straight, x, y, PGDConfig(eps=eps, alpha=alpha, steps=steps[-1]), record_at=steps,
                            seed=attack_seed(seed, "knn-bpda"))
    square = None
    if square_queries > 0:
        import torchattacks

        from aaa_core.suite import batched_flags
        t = time.perf_counter()
        attack = torchattacks.Square(target, norm="Linf", eps=eps, n_queries=square_queries, n_restarts=1,
                                     p_init=0.8, loss="margin", seed=attack_seed(seed, "knn-square"))
        square = batched_flags(target, attack, x, y, eps, "square on kNN")
        seconds["square"] = time.perf_counter() - t
    worst = {k: non_adaptive[k] & adaptive[k] & (square if square is not None else True) for k in steps}
    report = KNNReport(natural, correct_flags(plain, x, y),
                       {"non_adaptive": non_adaptive, "bpda": adaptive, "worst_case": worst,
                        "plain_ae_same_examples": plain_ae}, seconds=seconds, square=square,
                       square_queries=square_queries)
    acc = report.robust_accuracy()
    allowed = bpda_tolerance + ROUNDING
    report.checks = [Check("bpda_not_weaker_than_non_adaptive",
                           all(acc["bpda"][f"pgd{k}"] <= acc["non_adaptive"][f"pgd{k}"] + allowed for k in steps),
                           f"BPDA accuracy {acc['bpda']} must not exceed the non-adaptive {acc['non_adaptive']} "
                           f"by more than {bpda_tolerance}")]
    return report
