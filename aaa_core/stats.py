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
