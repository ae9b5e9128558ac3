"""Uncertainty of an accuracy measured on n examples."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from aaa_core.errors import AAAError


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion ``correct / n``: unlike the normal
    approximation it stays inside [0, 1] and is sound at 0 and n, where robust accuracies often sit."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in [0, n={n}], got {correct}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def percent_with_interval(accuracy: float, n: int) -> str:
    """'77.0 [67.9, 84.2]': an accuracy in percent with its 95% Wilson interval over the n examples."""
    lo, hi = wilson_interval(round(accuracy * n), n)
    return f"{100 * accuracy:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def encode_flags(flags) -> str:
    """Per-example "still correct" flags (a bool tensor or sequence, in example order) as a string of '0'
    and '1', the form every metrics file stores them in, so two pipelines scored on the same examples can be
    paired (McNemar) without re-running anything."""
    return "".join("1" if bool(f) else "0" for f in (flags.tolist() if hasattr(flags, "tolist") else flags))


def decode_flags(text: str) -> list[bool]:
    """The inverse of ``encode_flags``; anything but '0' and '1' is refused."""
    if set(text) - {"0", "1"}:
        raise ValueError(f"flags must be a string of 0 and 1, got {text[:20]!r}...")
    return [c == "1" for c in text]


# ---- the tests ----

def exact_two_sided_p(k: int, n: int) -> float:
    """The exact two-sided p-value of ``k`` successes in ``n`` Bernoulli(1/2) trials (scipy's ``binomtest``:
    the probability of every outcome no more likely than ``k``); 1 where ``n`` is 0, nothing having been
    observed."""
    if n == 0:
        return 1.0
    from scipy.stats import binomtest   # here, not at the top: scipy.stats costs every stage a second to import

    return float(binomtest(k, n, 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class Discordant:
    """The paired counts of two pipelines on the same examples: ``first_only`` examples only the first gets
    right (McNemar's b), ``second_only`` examples only the second does (c); ``both`` and ``neither`` are the
    concordant ones, which the test conditions away."""
    first_only: int
    second_only: int
    both: int = 0
    neither: int = 0

    @property
    def discordant(self) -> int:
        return self.first_only + self.second_only

    @property
    def n(self) -> int:
        return self.discordant + self.both + self.neither

    @property
    def p_value(self) -> float:
        """Exact McNemar: under H0, ``first_only`` ~ Binomial(b + c, 1/2)."""
        return exact_two_sided_p(self.first_only, self.discordant)

    def swapped(self) -> "Discordant":
        return Discordant(self.second_only, self.first_only, self.both, self.neither)


def flags_of(value) -> list[bool] | None:
    """Per-example flags as the metrics keep them (a '0'/'1' string from ``stats.encode_flags``, or a list of
    0/1 or booleans as AutoAttack's ``robust_flags``) as booleans; None stays None (no flags recorded)."""
    if value is None:
        return None
    if isinstance(value, str):
        return decode_flags(value)
    if not all(v in (0, 1) for v in value):   # True == 1, False == 0
        raise AAAError(f"per-example flags must be 0 or 1, got {list(value)[:10]!r}...")
    return [bool(v) for v in value]


def mcnemar(first, second) -> Discordant:
    """The paired counts of two flag sequences (each a string or list, see ``flags_of``) over the same
    examples in the same order; flags of different lengths cannot be on the same examples and are refused."""
    a, b = flags_of(first), flags_of(second)
    if a is None or b is None:
        raise AAAError("mcnemar needs the per-example flags of both pipelines")
    if len(a) != len(b):
        raise AAAError(f"per-example flags of different lengths ({len(a)} and {len(b)}) are not on the same "
                       "examples; re-run the stages that wrote them")
    first_only = sum(x and not y for x, y in zip(a, b))
    second_only = sum(y and not x for x, y in zip(a, b))
    both = sum(x and y for x, y in zip(a, b))
    return Discordant(first_only, second_only, both, len(a) - first_only - second_only - both)


def pooled(strata: Iterable[Discordant]) -> Discordant:
    """The stratified paired test across strata (training seeds), by pooling the discordant counts.

    Within stratum i, conditioned on its n_i = b_i + c_i discordant examples, H0 (the two sides equally good)
    makes b_i ~ Binomial(n_i, 1/2), independently across strata. A sum of independent binomials with the
    same success probability is binomial: sum b_i ~ Binomial(sum n_i, 1/2). So the exact pooled test is the
    exact binomial test of the pooled counts, which is what ``Discordant.p_value`` of the sum computes (the
    exact form of the Mantel-Haenszel / Cochran test for paired binary data with matched pairs). Each
    stratum keeps its own pairing: counts are only added after each stratum's examples have been paired.
    The strata are fixed effects: the test asks whether, on these examples and for these trained models, one
    side gets more of the discordant examples right; it does not model seed-to-seed variation as random."""
    total = [0, 0, 0, 0]
    for d in strata:
        for i, v in enumerate((d.first_only, d.second_only, d.both, d.neither)):
            total[i] += v
    return Discordant(*total)
