"""Uncertainty of an accuracy measured on n examples."""
from __future__ import annotations

import math


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
