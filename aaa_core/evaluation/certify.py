"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019).

The smoothed classifier g(x) = argmax_c P(f(x + d) = c), d ~ N(0, sigma^2 I), of any ``f`` (an ``nn.Module``
from images in [0, 1] of shape (N, C, H, W) to logits (N, K): a classifier alone, or AE + classifier). The
noise is added to the image in pixel units and not clipped to [0, 1], as in Cohen's code, so sigma and the
radii are L2 distances in pixel units.

``certify`` is Cohen's CERTIFY: the top class is chosen on ``n0`` noisy samples, its probability bounded
from below (Clopper-Pearson, one-sided, level 1 - alpha) on ``n`` fresh ones; it abstains (``ABSTAIN``)
when the bound is below 1/2, else certifies the radius sigma * Phi^-1(pA_lower). ``predict`` is PREDICT: the
two top counts of ``n`` samples, abstaining unless the binomial test separates them at level alpha.

Every draw of noise for an example comes from one ``torch.Generator`` on the model's device, seeded from a
seed and the example's index (``example_generator``), and always in blocks of ``NOISE_BLOCK`` samples:
``batch_size`` only groups the forward passes, so the results depend on neither it nor the other examples
certified alongside. The CPU and CUDA generators differ, so the radii depend on the device.
"""
from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy.stats import binomtest, norm
from torch import nn

from aaa_core.io import ABSTAIN, TSV_HEADER, atomic_path
from aaa_core.models.external import module_device
from aaa_core.progress import progress
from aaa_core.runtime import generator as seeded_generator
from aaa_core.stats import wilson_interval

NOISE_BLOCK = 1000          # samples per draw of noise, whatever the batch size
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)   # where certified accuracy is reported by default (L2, pixel units)


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for one image: the class (``ABSTAIN`` = -1) and the L2 radius (pixel units) within which
    the smoothed classifier's prediction is constant (0.0 when abstaining), with what it rests on."""
    prediction: int
    radius: float
    p_lower: float        # the (1 - alpha) lower confidence bound on the top class's probability under noise
    count: int            # estimation samples (of n) on the top class chosen on the selection samples


@dataclass(frozen=True)
class Record:
    """One line of the certification TSV: the example's index, its label, the certificate, and the seconds taken."""
    idx: int
    label: int
    predict: int
    radius: float
    correct: bool
    seconds: float
    p_lower: float


def example_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of example ``index``'s noise (int ``seed`` >= 0, int ``index`` >= 0) on ``device``: seeded by
    numpy's ``SeedSequence([seed, index])``, so every example has its own stream whatever else is certified."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return seeded_generator(int(state), device)


def _noise(shape: torch.Size, count: int, batch_size: int, generator: torch.Generator,
           device: torch.device) -> Iterator[torch.Tensor]:
    """``count`` standard normal samples of ``shape`` in batches of ``batch_size`` (the last one smaller), drawn from
    ``generator`` in blocks of ``NOISE_BLOCK``: the same samples in the same order for any ``batch_size``."""
    pending: list[torch.Tensor] = []
    buffered = drawn = 0
    while drawn < count or buffered:
        while buffered < batch_size and drawn < count:
            block = min(NOISE_BLOCK, count - drawn)
            pending.append(torch.randn((block, *shape), generator=generator, device=device))
            buffered, drawn = buffered + block, drawn + block
        joined = pending[0] if len(pending) == 1 else torch.cat(pending)
        take = min(batch_size, buffered)
        yield joined[:take]
        rest = joined[take:]
        pending, buffered = ([rest] if len(rest) else []), len(rest)


def sample_counts(model: nn.Module, x: torch.Tensor, sigma: float, num: int, *, batch_size: int,
                  generator: torch.Generator) -> np.ndarray:
    """How often ``model`` predicts each class on ``num`` noisy copies x + N(0, sigma^2 I) of one image.

    ``x``: (C, H, W), pixels in [0, 1], on the model's device (where ``generator`` must be too). Returns an int64
    array of shape (K,), K = the number of logits, summing to ``num``.
    """
    counts = None
    with torch.inference_mode():
        for noise in _noise(x.shape, num, batch_size, generator, x.device):
            logits = model(x.unsqueeze(0) + sigma * noise)
            batch = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
            counts = batch if counts is None else counts + batch
    return counts.cpu().numpy()


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """The one-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion from ``k`` successes in ``n``."""
    return float(binomtest(int(k), int(n), alternative="greater").proportion_ci(confidence_level=1 - alpha,
                                                                                 method="exact").low)


def _check(model: nn.Module, sigma: float, n: int, alpha: float, batch_size: int) -> None:
    if model.training:
        raise ValueError("the model is in training mode: call model.eval() (BatchNorm and dropout would change "
                         "its predictions under noise)")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if n < 1 or batch_size < 1:
        raise ValueError(f"the sample count and batch size must be at least 1, got {n} and {batch_size}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def certify(model: nn.Module, x: torch.Tensor, sigma: float, *, n0: int = 100, n: int = 100_000,
            alpha: float = 0.001, batch_size: int = 1000, generator: torch.Generator) -> Certificate:
    """Cohen's CERTIFY for one image.

    ``model``: images in [0, 1] (N, C, H, W) -> logits (N, K), in eval mode. ``x``: one image (C, H, W) in [0, 1],
    moved to the model's device. ``sigma``: the noise's standard deviation in pixel units. ``n0`` samples select
    the top class, ``n`` further samples bound its probability; ``alpha`` is the probability that the
    certificate is wrong. ``generator`` (on the model's device) draws all the noise. Returns a ``Certificate``:
    the class or ``ABSTAIN``, and the L2 radius sigma * Phi^-1(pA_lower) (0.0 when abstaining).
    """
    _check(model, sigma, n, alpha, batch_size)
    x = x.to(module_device(model))
    selection = sample_counts(model, x, sigma, n0, batch_size=batch_size, generator=generator)
    top = int(selection.argmax())
    count = int(sample_counts(model, x, sigma, n, batch_size=batch_size, generator=generator)[top])
    p_lower = lower_confidence_bound(count, n, alpha)
    if p_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, p_lower, count)
    return Certificate(top, float(sigma * norm.ppf(p_lower)), p_lower, count)


def predict(model: nn.Module, x: torch.Tensor, sigma: float, *, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000, generator: torch.Generator) -> int:
    """Cohen's PREDICT for one image: the smoothed classifier's class, or ``ABSTAIN`` (-1) when the two-sided
    binomial test of its count against the runner-up's does not reject equality at level ``alpha`` (the
    answer differs from g(x) with probability at most alpha). Inputs as for ``certify``."""
    _check(model, sigma, n, alpha, batch_size)
    x = x.to(module_device(model))
    counts = sample_counts(model, x, sigma, n, batch_size=batch_size, generator=generator)
    first, second = np.argsort(-counts, kind="stable")[:2]
    top, runner_up = int(counts[first]), int(counts[second])
    if binomtest(top, top + runner_up, 0.5).pvalue > alpha:
        return ABSTAIN
    return int(first)


def certify_dataset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, *, n0: int = 100,
                    n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000, seed: int,
                    indices: Sequence[int] | torch.Tensor | None = None, desc: str = "certify") -> list[Record]:
    """CERTIFY every image of ``x`` (N, C, H, W), pixels in [0, 1], with labels ``y`` (N,), int64.

    Example i's noise comes from ``example_generator(seed, indices[i])`` (``indices`` defaults to 0..N-1; the stage
    passes the test-set indices), so its certificate is the same whatever the batch size and whichever other
    examples are certified. Returns one ``Record`` per example, in order; a progress bar (``aaa_core.progress``)
    is labelled ``desc``.
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    indices = list(range(len(x))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(x):
        raise ValueError(f"{len(x)} images but {len(indices)} indices")
    device = module_device(model)
    records = []
    for i in progress(range(len(x)), desc):
        start = time.perf_counter()
        cert = certify(model, x[i], sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                       generator=example_generator(seed, indices[i], device))
        label = int(y[i])
        records.append(Record(indices[i], label, cert.prediction, cert.radius, cert.prediction == label,
                              time.perf_counter() - start, cert.p_lower))
    return records


def certified_accuracy(radii: Sequence[float], correct: Sequence[bool], predictions: Sequence[int],
                       at_radii: Sequence[float] = RADII) -> list[dict]:
    """The share of examples certified correct at each radius r of ``at_radii``: correct and radius >= r; an
    abstention (prediction ``ABSTAIN``) counts as wrong. ``radii``, ``correct``, ``predictions``: one value per
    example. Returns, per r: {"radius", "accuracy", "certified" (the count), "n", "wilson_95": [low, high]}."""
    radii, correct, predictions = (np.asarray(v) for v in (radii, correct, predictions))
    if not len(radii) == len(correct) == len(predictions) > 0:
        raise ValueError(f"expected as many radii, flags and predictions (at least one), got {len(radii)}, "
                         f"{len(correct)} and {len(predictions)}")
    ok = correct.astype(bool) & (predictions != ABSTAIN)
    total, rows = len(radii), []
    for r in at_radii:
        k = int((ok & (radii >= r)).sum())
        rows.append({"radius": float(r), "accuracy": k / total, "certified": k, "n": total,
                     "wilson_95": list(wilson_interval(k, total))})
    return rows


def summarize(records: Sequence[Record], at_radii: Sequence[float] = RADII) -> dict:
    """What a metrics file records of one certification run: certified accuracy at ``at_radii`` (with Wilson
    intervals), the abstention rate (with its interval), the average certified radius (a wrong or abstaining
    example counts 0) and the time taken."""
    n = len(records)
    abstained = sum(r.predict == ABSTAIN for r in records)
    seconds = sum(r.seconds for r in records)
    radius_sum = sum(r.radius for r in records if r.correct and r.predict != ABSTAIN)
    return {"examples": n,
            "certified_accuracy": certified_accuracy([r.radius for r in records], [r.correct for r in records],
                                                     [r.predict for r in records], at_radii),
            "abstention_rate": abstained / n, "abstention_wilson_95": list(wilson_interval(abstained, n)),
            "average_certified_radius": radius_sum / n,
            "seconds": round(seconds, 3), "examples_per_second": n / seconds if seconds > 0 else math.inf}


def format_tsv(records: Sequence[Record]) -> str:
    """The TSV Cohen's ``certify.py`` writes: a header ``idx label predict radius correct time``, then one line per
    example (predict -1 = abstain, radius to 4 decimals, correct 0 or 1, time as H:MM:SS.ffffff); read back by
    ``aaa_core.io.read_certify_tsv``."""
    lines = ["\t".join(TSV_HEADER)]
    for r in records:
        lines.append(f"{r.idx}\t{r.label}\t{r.predict}\t{r.radius:.4f}\t{int(r.correct)}\t"
                     f"{datetime.timedelta(seconds=r.seconds)}")
    return "\n".join(lines) + "\n"


def write_tsv(records: Sequence[Record], path: str | Path) -> None:
    """Write ``format_tsv(records)`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(format_tsv(records))
