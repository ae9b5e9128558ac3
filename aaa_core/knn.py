"""kNN latent reconstruction: replace an input's latent by the mean of its k nearest training latents.

Exact search is a matrix product: ``|q - b|^2 = |q|^2 - 2 q.b + |b|^2``, computed in query chunks, with
``topk`` per chunk. 10,000 queries against 60,000 latents of 12,544 dimensions (Fashion-MNIST) is about
15 TFLOP, so it runs at the machine's matrix-product rate (``benchmarks/knn.py`` prints both).

The kNN step is piecewise constant in the input: its gradient is zero almost everywhere, so a plain
white-box attack through it is blind. ``KNNDefended(..., bpda=True)`` gives the straight-through (BPDA,
Athalye et al. 2018) gradient: forward through the kNN mean, backward as if the latent passed unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


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
