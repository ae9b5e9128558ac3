"""AAA against Madry beyond one seed and beyond the adaptive suite (comparison/dvc.yaml).

Three things the study's one-seed tables cannot say: how much a number moves when the same budget is
trained again with another seed; how the headline pipelines fare under AutoAttack at its published
settings (so they compare with published AutoAttack figures); and, from both, which of AAA and Madry
wins where the answer is not a tie. This module holds the parts a test can reach: the params file
(``comparison.yaml``), AutoAttack's standard cascade, and the seed table with its verdict.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml
from torch import Tensor, nn

from aaa_core.config import ParamsError, Size, _build
from aaa_core.evaluate import correct_flags
from aaa_core.stats import wilson_interval
from aaa_core.suite import check_in_ball

# ---- comparison.yaml: the study's own knobs, checked like params.yaml ----


@dataclass(frozen=True)
class ComparisonConfig:
    seed_offsets: list[int]    # extra training seeds, as offsets from params.yaml's seed (the study's models: 0)
    autoattack_subset: Size    # test images attacked by AutoAttack, the seeded random subset (0 = all 10,000)


def load_comparison(path: str | Path, dataset: str, scale: str) -> ComparisonConfig:
    """``<dataset>`` of the comparison params file with ``<dataset>.scales.<scale>`` laid over it; an unknown,
    missing, mistyped or out-of-range key stops the stage with one line naming file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {getattr(err, 'problem', None) or err}") from None
    try:
        if not isinstance(raw, dict) or not isinstance(raw.get(dataset), dict):
            raise ParamsError(f"params: no {dataset} section")
        section = dict(raw[dataset])
        overlay = (section.pop("scales", None) or {}).get(scale) or {}
        names = {k: f"{dataset}.scales.{scale}.{k}" for k in overlay}
        cfg = _build(ComparisonConfig, {**section, **overlay}, dataset, names)
        offsets = cfg.seed_offsets
        if not all(isinstance(o, int) and not isinstance(o, bool) and o >= 1 for o in offsets) \
                or len(set(offsets)) != len(offsets):
            raise ParamsError(f"params: {dataset}.seed_offsets = {offsets!r}: expected distinct integers >= 1 "
                              "(offset 0 is the study's own models)")
        return cfg
    except ParamsError as err:
        raise ParamsError(f"{path}: {str(err).removeprefix('params: ')}") from None


# ---- AutoAttack, standard version, at its published settings ----

STANDARD_STEPS = 100          # APGD-CE, APGD-T and FAB-T iterations in Croce & Hein's standard version
STANDARD_SQUARE_QUERIES = 5000


def standard_attacks(model: nn.Module, eps: float, *, n_classes: int = 10, seed: int = 0,
                     steps: int = STANDARD_STEPS, square_queries: int = STANDARD_SQUARE_QUERIES) -> list[tuple]:
    """AutoAttack's standard composition (L-inf) as torchattacks objects: APGD-CE, APGD-T and FAB-T on the
    n_classes - 1 other classes, Square with 5,000 queries; one restart each (the standard version).

    Not ``torchattacks.AutoAttack``: it builds the same four attacks with torchattacks' default of 10
    iterations (``steps`` is never passed), a tenth of the published 100, and Square with the rescaled
    schedule, and reports only the final accuracy; the cascade below is the same loop with each attack's
    accuracy kept.
    """
    import torchattacks

    common = {"norm": "Linf", "eps": eps, "seed": seed}
    return [
        ("apgd-ce", torchattacks.APGD(model, steps=steps, n_restarts=1, loss="ce", **common),
         {"steps": steps, "restarts": 1, "loss": "ce"}),
        ("apgd-t", torchattacks.APGDT(model, steps=steps, n_restarts=1, n_classes=n_classes, **common),
         {"steps": steps, "restarts": 1, "loss": "dlr-targeted", "targets": n_classes - 1}),
        ("fab-t", torchattacks.FAB(model, steps=steps, n_restarts=1, multi_targeted=True, n_classes=n_classes,
                                   **common),
         {"steps": steps, "restarts": 1, "targets": n_classes - 1}),
        # resc_schedule=False as in Croce & Hein's standard version (torchattacks' default rescales the
        # schedule of the square size as if 10,000 queries were given)
        ("square", torchattacks.Square(model, n_queries=square_queries, n_restarts=1, p_init=0.8, loss="margin",
                                       resc_schedule=False, **common),
         {"queries": square_queries, "restarts": 1, "p_init": 0.8, "loss": "margin", "rescale_schedule": False}),
    ]


@dataclass
class AutoAttackReport:
    natural: Tensor                       # per example: correct on the clean image
    after: dict[str, Tensor]              # per attack, in cascade order: still correct after it and all before it
    settings: dict[str, dict]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def flags(self) -> Tensor:
        return list(self.after.values())[-1] if self.after else self.natural

    @property
    def accuracy(self) -> float:
        return self.flags.float().mean().item()

    def as_dict(self) -> dict:
        n = len(self.natural)
        return {"examples": n, "natural_accuracy": self.natural.float().mean().item(),
                "autoattack_accuracy": self.accuracy,
                "cascade": [{"name": name, "settings": self.settings[name],
                             "accuracy_after": flags.float().mean().item(),
                             "seconds": round(self.seconds.get(name, 0.0), 1)}
                            for name, flags in self.after.items()],
                "robust_flags": [int(v) for v in self.flags.tolist()]}


def autoattack_standard(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, n_classes: int = 10, seed: int = 0,
                        steps: int = STANDARD_STEPS, square_queries: int = STANDARD_SQUARE_QUERIES,
                        batch_size: int = 500, log: Callable[[str], None] = print) -> AutoAttackReport:
    """AutoAttack's cascade on ``model`` (eval mode, [0, 1] images to logits): each attack runs on the examples
    every attack before it left correctly classified, as in Croce & Hein's evaluation; an example is robust
    only if all four fail. Every adversarial example is checked to lie in the eps ball and [0, 1]."""
    import torchattacks

    model.eval()
    natural = correct_flags(model, x, y)
    robust = natural.clone()
    after: dict[str, Tensor] = {}
    settings: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for name, attack, described in standard_attacks(model, eps, n_classes=n_classes, seed=seed, steps=steps,
                                                    square_queries=square_queries):
        start = time.perf_counter()
        todo = robust.nonzero().flatten()
        for chunk in (todo.split(batch_size) if len(todo) else ()):
            xb, yb = x[chunk], y[chunk]
            x_adv = attack(xb, yb).detach()
            check_in_ball(x_adv, xb, eps, f"AutoAttack {name}")
            robust[chunk] = correct_flags(model, x_adv, yb)
        after[name] = robust.clone()
        settings[name] = {**described, "eps": eps, "norm": "linf", "seed": seed,
                          "library": f"torchattacks {torchattacks.__version__}"}
        seconds[name] = time.perf_counter() - start
        log(f"  after {name:8s} {100 * robust.float().mean().item():6.2f}%  ({seconds[name]:.0f}s, "
            f"{len(todo)} examples attacked)")
    return AutoAttackReport(natural, after, settings, seconds)


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
    outside); anything less is a tie, with the gap of the means stated."""
    if not aaa or not madry:
        return "not measured"
    mean_a, mean_m = spread([m.accuracy for m in aaa])[0], spread([m.accuracy for m in madry])[0]
    gap = f"means {100 * mean_a:.1f} vs {100 * mean_m:.1f}"
    if min(m.interval[0] for m in madry) > max(m.interval[1] for m in aaa):
        return f"{madry_name} wins ({gap}: every {madry_name} seed's interval lies above every {aaa_name} seed's)"
    if min(m.interval[0] for m in aaa) > max(m.interval[1] for m in madry):
        return f"{aaa_name} wins ({gap}: every {aaa_name} seed's interval lies above every {madry_name} seed's)"
    return f"tie ({gap}: the seeds' intervals overlap)"


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
