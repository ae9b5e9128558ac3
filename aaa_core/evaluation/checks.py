"""Sanity checks that compare independent attack runs (so that they can fail), paired per example."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from aaa_core.evaluation.flags import ROUNDING


class SanityError(AssertionError):
    """A robustness number that cannot be trusted: the evaluation stops instead of reporting it."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def constant_output(pred: Tensor, y: Tensor, *, min_share: float = 0.95) -> dict | None:
    """A degenerate pipeline: one class among at least ``min_share`` of its ``predictions`` on clean inputs
    (labels ``y``), or None.

    No attack can fool such a pipeline on the examples of that class (its output hardly depends on the
    input), so its accuracy at any eps stays near that class's share of the labels: not masked gradients,
    a collapsed model. Returns {"class", "share" of predictions, "label_share" of labels}.
    """
    counts = torch.bincount(pred)
    cls = int(counts.argmax())
    share = counts[cls].item() / len(pred)
    if share < min_share:
        return None
    return {"class": cls, "share": share, "label_share": (y == cls).float().mean().item()}


def check_high_eps(acc: float, eps: float, max_acc: float, constant: dict | None = None) -> Check:
    """Accuracy near zero at a huge eps; for a constant-output pipeline, near its class's label share."""
    limit, detail = max_acc, f"robust accuracy {acc:.4f} at eps {eps} must be <= {max_acc}"
    if constant is not None:
        limit += constant["label_share"]
        detail += (f" + {constant['label_share']:.4f}: the pipeline is DEGENERATE, it predicts class "
                   f"{constant['class']} for {constant['share']:.1%} of clean inputs, and no attack can fool it "
                   "on that class's examples")
    return Check("accuracy_near_zero_at_high_eps", acc <= limit + ROUNDING, detail)


def check_steps_monotone(acc_by_steps: dict[int, float], what: str = "accuracy") -> Check:
    """More PGD steps never raise accuracy; ``what`` names the accuracies in the detail."""
    ordered = [acc_by_steps[k] for k in sorted(acc_by_steps)]
    ok = all(b <= a + ROUNDING for a, b in zip(ordered, ordered[1:]))
    return Check("more_steps_never_raise_accuracy", ok,
                 f"{what} by steps " + ", ".join(f"{k}: {acc_by_steps[k]:.4f}" for k in sorted(acc_by_steps)))


def check_whitebox_beats_transfer(whitebox: float, transfer: float, tolerance: float) -> Check:
    return Check("whitebox_at_least_as_strong_as_transfer", whitebox <= transfer + tolerance + ROUNDING,
                 f"white-box accuracy {whitebox:.4f} must be <= transfer accuracy {transfer:.4f} + {tolerance}; "
                 "if not, gradients through the defence are probably masked")


def check_noise_weaker(noise: float, robust: float) -> Check:
    return Check("noise_weaker_than_attack", noise >= robust - ROUNDING,
                 f"accuracy under uniform noise {noise:.4f} must be >= robust accuracy {robust:.4f}")


def enforce(checks: Sequence[Check]) -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        raise SanityError("sanity check(s) failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))

def sign_test_p(successes: int, trials: int) -> float:
    """One-sided exact binomial test: P(X >= successes) for X ~ Binomial(trials, 1/2)."""
    return sum(math.comb(trials, i) for i in range(successes, trials + 1)) / 2 ** trials if trials else 1.0


def check_more_steps_not_weaker(runs: dict[int, Tensor], alpha: float = 0.01) -> Check:
    """Independent PGD runs with more steps are not weaker than runs with fewer, on the same examples.

    ``runs`` maps a step count to per-example "still correct" flags of its own run (its own random start).
    Paired per example: ``b`` examples survive the longer run but fall to the shorter one, ``c`` the reverse.
    If more steps are at least as strong, b exceeds c only by chance: the check fails when a one-sided sign
    test on the b + c discordant examples rejects that at level ``alpha`` (a broken step rule, a step count
    silently ignored). Different random starts make a small b > c normal, which is why the test is paired
    and not a comparison of two accuracies. Flags of one run recorded at several step counts must not be
    passed: there more steps cannot raise accuracy by construction, and the check could not fail.
    """
    ordered = sorted(runs)
    parts, ok = [], True
    for few, many in zip(ordered, ordered[1:]):
        b = int((runs[many] & ~runs[few]).sum())
        c = int((runs[few] & ~runs[many]).sum())
        p = sign_test_p(b, b + c)
        ok = ok and p >= alpha
        parts.append(f"{many} vs {few} steps: {b} examples survive only the longer run, {c} only the shorter, "
                     f"one-sided sign test p = {p:.3g} (fails below {alpha})")
    return Check("more_steps_not_weaker_independent_runs", ok,
                 "; ".join(parts) + "; accuracy by steps " + ", ".join(
                     f"{k}: {runs[k].float().mean().item():.4f}" for k in ordered))
