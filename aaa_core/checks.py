"""Sanity checks that compare independent attack runs (so that they can fail), paired per example."""
from __future__ import annotations

import math

from torch import Tensor

from aaa_core.evaluate import Check

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
