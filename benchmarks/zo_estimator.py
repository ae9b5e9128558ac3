"""How good is the zeroth-order gradient? Cosine of estimated against true vector-Jacobian products, MNIST AE + DNN.

On the trained pipeline (``--classifier``, ``--ae``) and N seeded test images, for each space, estimator, number
of directions q and smoothing mu: the mean (and std over the images) of the cosine between the estimate and
the true ``g = J(input)^T w`` (autograd), the relative error ``||g_est - g|| / ||g||``, the norm ratio
``||g_est|| / ||g||``, and the black-box queries per image the estimate cost (counted by ``QueryOnly``).
A last line names the best estimator (highest mean cosine) within each query budget (``--budgets``, at most
100 and at most 1,000 queries per image by default; a tie to 3 decimals goes to the cheaper one).

The quantity, as in the AE's training: ``loss = cross_entropy(logits, y)`` (summed, so each image's gradient
is its own), ``w = dloss/dlogits``; the black box is queried for logits and ``w`` is passed to the estimator
as the backward pass passes it to ``ZeroOrder``.

Spaces:

- ``pixel``: black box = the classifier, input u = the AE's output image (d = 784). What ``ZeroOrder``
  estimates today.
- ``latent``: black box = classifier o decoder, input z = ``ae.encode(x)`` (d = the AE's latent size, 128), as
  ZO-AE-DS (Zhang et al., ICLR 2022). Caveat for training: with the estimate taken there, the CE term's
  gradient reaches the encoder only; the decoder is inside the black box and learns from the MSE term alone.

Estimators (all estimate ``J^T w`` from ``<f(input + mu * v) - ..., w>``):

- ``rge``: ``aaa_core.training.query_only.rge_vjp``, the code that trains (directions uniform on the unit
  sphere, ``d / (q mu)`` scaling), plus the base point's query: q + 1 queries per image.
- ``rge-antithetic``: the same directions, ``d / (2 q mu) * sum <f(u + mu v) - f(u - mu v), w> v``: 2q queries.
- ``cge-forward``: coordinate-wise forward differences: d + 1 queries (q is then d).
- ``cge-central``: coordinate-wise central differences: 2d queries.

The antithetic RGE and the CGEs are implemented here, as the candidates to adopt into ``query_only.py``.
Queries are the estimator's own, base point included where it needs one; in training the forward pass
already queried the base point, so RGE and forward CGE cost q (d) on top of it, antithetic RGE and central
CGE 2q (2d). Every cell draws its directions from a generator seeded with ``--seed``, so the RGE and the
antithetic RGE at the same q (and every mu) use the same directions: a paired comparison.

Run: `.venv/bin/python benchmarks/zo_estimator.py` (1.25 M queries, most of them the pixel-space CGEs: minutes on
CPU), `--quick` for N = 8, q in (1, 20), mu = 0.01 (23,000 queries, 16 s on one busy CPU core); `--device cuda`
on a GPU.
"""
from __future__ import annotations

import argparse
import math
import time

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aaa_core.data import load_prepared
from aaa_core.models.checkpoints import load_model
from aaa_core.training.query_only import QueryOnly, rge_vjp

ESTIMATORS = ("rge", "rge-antithetic", "cge-forward", "cge-central")
SPACES = ("pixel", "latent")


class DecodeThenClassify(nn.Module):
    """The latent space's black box: f(z) = classifier(decode(z))."""

    def __init__(self, ae: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.ae, self.classifier = ae, classifier

    def forward(self, z: Tensor) -> Tensor:
        return self.classifier(self.ae.decode(z))


def chunked(box: QueryOnly, chunk: int):
    """``box.query`` that sends at most ``chunk`` images at a time (q = 500 probes of 64 images are 32,000)."""
    return lambda x: torch.cat([box.query(part) for part in x.split(chunk)])


def unit_directions(q: int, n: int, dim: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """(q, n, dim) directions uniform on each image's unit sphere, drawn exactly as ``rge_vjp`` draws them."""
    v = torch.randn((q, n, dim), generator=generator, device=device, dtype=torch.float32)
    return v / v.norm(dim=2, keepdim=True)


# --- the estimators: each returns the estimate of J(u)^T w with u's shape; queries are counted by the box ---

def rge(query, u: Tensor, w: Tensor, *, q: int, mu: float, generator: torch.Generator) -> Tensor:
    """The training code's RGE (``rge_vjp``) with its base-point query: q + 1 queries per image."""
    out = query(u)
    return rge_vjp(query, u, out, w, directions=q, smoothing=mu, generator=generator)


def rge_antithetic(query, u: Tensor, w: Tensor, *, q: int, mu: float, generator: torch.Generator) -> Tensor:
    """Candidate: antithetic (two-sided) RGE, d / (2 q mu) * sum_i <f(u + mu v_i) - f(u - mu v_i), w> v_i.

    2q queries per image, no base point; its difference cancels f's even terms, so its bias is O(mu^2)
    against forward RGE's O(mu) and the curvature no longer adds variance.
    """
    n, shape, dim = len(u), u.shape[1:], u[0].numel()
    v = unit_directions(q, n, dim, generator, u.device)
    flat = u.float().reshape(1, n, dim)
    plus = query((flat + mu * v).reshape(q * n, *shape)).reshape(q, n, -1)
    minus = query((flat - mu * v).reshape(q * n, *shape)).reshape(q, n, -1)
    slopes = ((plus - minus) * w.reshape(1, n, -1)).sum(2) / (2 * mu)          # (q, n)
    return (dim / q) * (slopes[..., None] * v).sum(0).reshape(u.shape)


def cge(query, u: Tensor, w: Tensor, *, mu: float, central: bool, chunk: int) -> Tensor:
    """Candidate: coordinate-wise estimate, one (forward: d + 1 queries) or two (central: 2d) probes per coordinate.

    Deterministic: forward differences have O(mu) bias, central O(mu^2); no sampling variance.
    """
    n, shape, dim = len(u), u.shape[1:], u[0].numel()
    flat = u.float().reshape(1, n, dim)
    wf = w.reshape(1, n, -1)
    base = None if central else query(u).reshape(1, n, -1)
    grad = torch.empty(n, dim, device=u.device)
    block = max(1, chunk // n)                       # coordinates probed per call
    for start in range(0, dim, block):
        k = min(block, dim - start)
        step = torch.zeros(k, 1, dim, device=u.device)
        step[torch.arange(k), 0, torch.arange(start, start + k)] = mu
        plus = query((flat + step).reshape(k * n, *shape)).reshape(k, n, -1)
        if central:
            minus = query((flat - step).reshape(k * n, *shape)).reshape(k, n, -1)
            slopes = ((plus - minus) * wf).sum(2) / (2 * mu)
        else:
            slopes = ((plus - base) * wf).sum(2) / mu
        grad[:, start:start + k] = slopes.T
    return grad.reshape(u.shape)


def expected_queries(estimator: str, q: int, dim: int) -> int:
    return {"rge": q + 1, "rge-antithetic": 2 * q, "cge-forward": dim + 1, "cge-central": 2 * dim}[estimator]


# --- measurement ---

def true_vjp(model: nn.Module, inp: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, w = dCE/dlogits, g = J^T w = dCE/dinput) by autograd, CE summed so each image keeps its own."""
    inp = inp.detach().requires_grad_(True)
    logits = model(inp)
    loss = F.cross_entropy(logits, y, reduction="sum")
    w, g = torch.autograd.grad(loss, (logits, inp))
    return logits.detach(), w.detach(), g.detach()


def compare(est: Tensor, g: Tensor) -> dict[str, Tensor]:
    """Per-image cosine, relative error and norm ratio (cosine by hand: ``F.cosine_similarity`` clamps the
    product of the norms at 1e-8, and a confidently classified image's g can be smaller than that)."""
    est, g = est.flatten(1).double(), g.flatten(1).double()
    ne, ng = est.norm(dim=1), g.norm(dim=1)
    return {"cos": (est * g).sum(1) / (ne * ng), "rel_err": (est - g).norm(dim=1) / ng, "norm_ratio": ne / ng}


def run_cell(box: QueryOnly, estimator: str, u: Tensor, w: Tensor, g: Tensor, *, q: int, mu: float,
             seed: int, chunk: int, device: torch.device) -> dict:
    query = chunked(box, chunk)
    generator = torch.Generator(device=device).manual_seed(seed)
    dim, n = u[0].numel(), len(u)
    before = box.queries
    if estimator == "rge":
        est = rge(query, u, w, q=q, mu=mu, generator=generator)
    elif estimator == "rge-antithetic":
        est = rge_antithetic(query, u, w, q=q, mu=mu, generator=generator)
    else:
        est = cge(query, u, w, mu=mu, central=estimator == "cge-central", chunk=chunk)
    per_image = (box.queries - before) / n
    expected = expected_queries(estimator, q, dim)
    if per_image != expected:
        raise AssertionError(f"{estimator} q={q}: counted {per_image} queries per image, expected {expected}")
    m = compare(est, g)
    return {"estimator": estimator, "q": dim if estimator.startswith("cge") else q, "mu": mu,
            "queries/image": int(per_image), "cos mean": m["cos"].mean().item(), "cos std": m["cos"].std().item(),
            "rel err": m["rel_err"].mean().item(), "norm ratio": m["norm_ratio"].mean().item()}


def best_line(table: pd.DataFrame, budgets: list[int]) -> str:
    parts = []
    for budget in budgets:
        fit = table[table["queries/image"] <= budget]
        if fit.empty:
            parts.append(f"at most {budget:,} queries/image: none fits")
            continue
        # the highest mean cosine; a tie to 3 decimals goes to the cheaper estimator
        r = fit.assign(key=-fit["cos mean"].round(3)).sort_values(["key", "queries/image"], kind="stable").iloc[0]
        parts.append(f"at most {budget:,} queries/image: {r['space']} {r['estimator']} q={r['q']} mu={r['mu']:g} "
                     f"({r['queries/image']:,} queries/image), cosine {r['cos mean']:.3f} +- {r['cos std']:.3f}")
    return "best " + "; best ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", default="models/mnist/dnn.pt")
    parser.add_argument("--ae", default="models/mnist/ae_ce_mse.pt")
    parser.add_argument("--data", default="data/mnist/mnist.pt")
    parser.add_argument("--n", type=int, default=None, help="test images (default 64; --quick: 8)")
    parser.add_argument("--q", type=int, nargs="+", default=None,
                        help="RGE directions (default 1 5 20 100 500; --quick: 1 20)")
    parser.add_argument("--mu", type=float, nargs="+", default=None,
                        help="smoothing (default 0.001 0.01 0.1; --quick: 0.01)")
    parser.add_argument("--spaces", nargs="+", choices=SPACES, default=list(SPACES))
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 1000],
                        help="query budgets per image for the last line (at most)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk", type=int, default=256,
                        help="images per black-box call (on 2 CPU cores 256 ran the --quick set 2x faster than 4096)")
    parser.add_argument("--quick", action="store_true", help="N = 8, q in (1, 20), mu = 0.01: seconds on CPU")
    args = parser.parse_args()
    n = args.n or (8 if args.quick else 64)
    qs = args.q or ([1, 20] if args.quick else [1, 5, 20, 100, 500])
    mus = args.mu or ([0.01] if args.quick else [0.001, 0.01, 0.1])
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    classifier, _ = load_model(args.classifier, device=device)
    ae, _ = load_model(args.ae, kind="ae", device=device)
    classifier.requires_grad_(False).eval()
    ae.requires_grad_(False).eval()
    data = load_prepared(args.data)
    pick = torch.randperm(len(data["x_test"]), generator=torch.Generator().manual_seed(args.seed))[:n]
    x = data["x_test"][pick].float().to(device)
    y = data["y_test"][pick].to(device)
    with torch.no_grad():
        z = ae.encode(x)
        u = ae.decode(z)
        accuracy = (classifier(u).argmax(1) == y).float().mean().item()

    boxes = {"pixel": (QueryOnly(classifier), u), "latent": (QueryOnly(DecodeThenClassify(ae, classifier)), z)}
    print(f"{args.classifier} behind {args.ae}; {n} test images (seed {args.seed}), pipeline accuracy on them "
          f"{accuracy:.3f}; device {device}, {torch.get_num_threads()} threads, float32")
    rows, start = [], time.perf_counter()
    for space in args.spaces:
        box, inp = boxes[space]
        logits, w, g = true_vjp(box.model, inp, y)
        answer = box.query(inp)
        gap = (answer - logits).abs().max().item()
        flat = inp.flatten(1)
        print(f"{space}: d = {flat.shape[1]}, mean ||input|| {flat.norm(dim=1).mean():.3g}, per-coordinate std "
              f"{flat.std(0).mean():.3g}, mean ||g|| {g.flatten(1).norm(dim=1).mean():.3g}, "
              f"mean CE {F.cross_entropy(logits, y).item():.3g}; black box vs autograd logits max gap {gap:.1e}")
        for estimator in args.estimators:
            for q in ([0] if estimator.startswith("cge") else qs):
                for mu in mus:
                    cell = run_cell(box, estimator, inp, w, g, q=q, mu=mu, seed=args.seed, chunk=args.chunk,
                                    device=device)
                    rows.append({"space": space, "d": flat.shape[1], **cell})
    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=("", "", "", "", "g", "", ".3f", ".3f", ".3g", ".3g")))
    print()
    total = sum(box.queries for box, _ in boxes.values())
    print(f"{total:,} queries in {time.perf_counter() - start:.1f} s; sqrt(q/d) for reference: "
          + ", ".join(f"{s} q={q}: {math.sqrt(q / boxes[s][1][0].numel()):.3f}" for s in args.spaces for q in qs))
    print(best_line(table, args.budgets))


if __name__ == "__main__":
    main()
