"""AAA against Madry across training seeds (comparison/dvc.yaml): each seed's measurements (natural, PGD,
suite worst case, AutoAttack) with their intervals, their spread over seeds, and the summary the comparison's
report lays out. The verdicts themselves are ``reporting.verdicts``' paired tests."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from aaa_core.stats import wilson_interval

# ---- the seed table and its verdict ----


@dataclass(frozen=True)
class Measurement:
    accuracy: float
    n: int

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(round(self.accuracy * self.n), self.n)


def spread(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def seed_verdict(aaa: Sequence[Measurement], madry: Sequence[Measurement], *, aaa_name: str = "AAA",
                 madry_name: str = "Madry") -> str:
    """Who wins one measure across seeds. A side wins only where every one of its seeds' 95% Wilson
    intervals lies above every seed interval of the other side (seed spread and example noise both
    outside); anything less is inconclusive (never "a tie"), with the gap of the means stated."""
    if not aaa or not madry:
        return "not measured"
    mean_a, mean_m = spread([m.accuracy for m in aaa])[0], spread([m.accuracy for m in madry])[0]
    gap = f"means {100 * mean_a:.1f} vs {100 * mean_m:.1f}"
    if min(m.interval[0] for m in madry) > max(m.interval[1] for m in aaa):
        return f"{madry_name} wins ({gap}: every {madry_name} seed's interval lies above every {aaa_name} seed's)"
    if min(m.interval[0] for m in aaa) > max(m.interval[1] for m in madry):
        return f"{aaa_name} wins ({gap}: every {aaa_name} seed's interval lies above every {madry_name} seed's)"
    return f"inconclusive ({gap}: the seeds' intervals overlap)"


def pct_interval(m: Measurement | None) -> str:
    if m is None:
        return "-"
    lo, hi = m.interval
    return f"{100 * m.accuracy:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def mean_sd(ms: Sequence[Measurement]) -> str:
    if not ms:
        return "-"
    mean, sd = spread([m.accuracy for m in ms])
    return f"{100 * mean:.1f}" + (f" +- {100 * sd:.1f}" if sd is not None and not math.isnan(sd) else "")


# ---- reading the metrics of one seed, and the report ----

MEASURES = ("natural", "pgd", "worst", "autoattack")


def seed_measurements(evaluate: dict | None, robustness: dict | None, autoattack: dict | None) -> dict[str, Measurement]:
    """One pipeline at one seed: natural and PGD accuracy (the evaluate stage, its largest step count), the
    adaptive suite's worst case and AutoAttack, each with the number of examples it was measured on."""
    out: dict[str, Measurement] = {}
    if evaluate is not None:
        n = evaluate["attack"]["examples"]
        out["natural"] = Measurement(evaluate["natural_accuracy"], n)
        out["pgd"] = Measurement(evaluate["robust_accuracy"][f"pgd{evaluate['attack']['steps']}"], n)
    if robustness is not None:
        out["worst"] = Measurement(robustness["worst_case_accuracy"], robustness["examples"])
    if autoattack is not None:
        out["autoattack"] = Measurement(autoattack["autoattack_accuracy"], autoattack["examples"])
    return out


@dataclass
class Side:
    """One pipeline (AAA or Madry) over its seeds: seed -> measurements."""
    name: str
    seeds: dict[int, dict[str, Measurement]]

    def measure(self, key: str) -> list[Measurement]:
        return [m[key] for m in self.seeds.values() if key in m]


def summary(aaa: Side, madry: Side) -> dict:
    """The comparison's headline numbers (a DVC metrics file): per measure, mean and sd over seeds of each
    side, the number of seeds, and the verdict."""
    out = {}
    for key in MEASURES:
        entry = {}
        for side in (aaa, madry):
            values = [m.accuracy for m in side.measure(key)]
            if values:
                mean, sd = spread(values)
                entry[side.name] = {"mean": mean, "sd": sd, "seeds": len(values)}
        entry["verdict"] = seed_verdict(aaa.measure(key), madry.measure(key), aaa_name=f"AAA ({aaa.name})",
                                        madry_name=f"Madry ({madry.name})")
        out[key] = entry
    return out
