"""The adaptive-attack suite: many attacks on one pipeline, per-example flags, worst case, sanity checks.

Autoencoder defences have a history of numbers that fell under stronger attacks, so a robust accuracy
here is the per-example worst case over white-box gradient attacks (PGD with restarts and two losses,
APGD-CE, APGD-T from torchattacks at AutoAttack's strength), a query-only attack (Square) and transfer
attacks. Every attack returns "still correct" flags per example; the worst case is their AND.

Each attack is described in full (what the report prints beside its number). Every adversarial example
is checked to lie in the eps ball and in [0, 1] before it is scored, whichever library made it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Collection, Sequence

import torch
from torch import Tensor, nn

from aaa_core.attacks import PGDConfig, pgd
from aaa_core.evaluation.checks import (
    Check,
    check_high_eps,
    check_more_steps_not_weaker,
    constant_output,
)
from aaa_core.evaluation.flags import (
    ROUNDING,
    correct_flags,
    noise_flags,
    predictions,
    robust_flags,
)
from aaa_core.progress import progress
from aaa_core.runtime import attack_seed
from aaa_core.runtime import generator as make_generator
from aaa_core.stats import encode_flags

WHITE_BOX = "white-box"
QUERY_ONLY = "query-only"
TRANSFER = "transfer"


@dataclass(frozen=True)
class SuiteConfig:
    eps: float
    paper_alpha: float            # the paper's protocol: PGD, step paper_alpha, paper_steps (e.g. 40, 200)
    paper_steps: list[int]
    pgd_steps: int                # PGD with restarts, cross-entropy and margin loss
    pgd_alpha: float
    pgd_restarts: int
    apgd_steps: int               # AutoAttack's standard: 100
    apgdt_targets: int            # AutoAttack's standard: 9 (all other classes on 10-class data)
    square_queries: int
    transfer_steps: int
    curve_eps: list[float]        # accuracy against eps: PGD-curve_steps, step 2.5 * eps / steps
    curve_steps: int
    max_acc_at_high_eps: float    # accuracy at the largest curve eps must be at most this
    masking_tolerance: float      # a query-only or transfer attack may beat the best white-box one by this
    seed: int = 0
    max_masking_gap: float = 1.0  # even on a pipeline whose masking is acknowledged, at most this beyond the tolerance


def suite_config(params: Any, dataset: str, *, eps: float | None = None, seed: int | None = None) -> SuiteConfig:
    """The suite of a named dataset from a params file (``aaa_core.config.Params``), as the robustness stage
    builds it: eps, step and step counts of the paper's protocol from ``threat.<dataset>``, every budget and
    tolerance from ``suite.<dataset>``, the seed from ``seed``. ``eps`` and ``seed`` replace the params' when
    given (``aaa evaluate --eps/--seed``)."""
    threat, budget = params.attack(dataset), params.section("suite", dataset)
    return SuiteConfig(eps=threat.eps if eps is None else eps, paper_alpha=threat.alpha,
                       paper_steps=threat.eval_steps, pgd_steps=budget.pgd_steps, pgd_alpha=budget.pgd_alpha,
                       pgd_restarts=budget.pgd_restarts, apgd_steps=budget.apgd_steps,
                       apgdt_targets=budget.apgdt_targets, square_queries=budget.square_queries,
                       transfer_steps=budget.transfer_steps, curve_eps=budget.curve_eps,
                       curve_steps=budget.curve_steps, max_acc_at_high_eps=budget.max_acc_at_high_eps,
                       masking_tolerance=budget.masking_tolerance, max_masking_gap=budget.max_masking_gap,
                       seed=params.seed if seed is None else seed)


@dataclass
class AttackResult:
    name: str
    kind: str                     # white-box, query-only or transfer
    settings: dict
    flags: Tensor                 # per example: still correctly classified after the attack
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.flags.float().mean().item()

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "settings": self.settings, "accuracy": self.accuracy,
                "seconds": round(self.seconds, 1), "flags": encode_flags(self.flags)}


def check_in_ball(x_adv: Tensor, x: Tensor, eps: float, name: str) -> None:
    """Refuse to score an "adversarial example" outside the threat model (a library bug would inflate attacks)."""
    gap = (x_adv - x).abs().max().item() if len(x) else 0.0
    if gap > eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
        raise ValueError(f"{name} returned points outside the L-inf ball of {eps} or outside [0, 1] "
                         f"(max |delta| {gap:.6f}, range [{x_adv.min():.4f}, {x_adv.max():.4f}])")


def batched_flags(model: nn.Module, make_adv: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                  eps: float, name: str, batch_size: int = 256) -> Tensor:
    out = []
    batches = list(zip(x.split(batch_size), y.split(batch_size)))
    for xb, yb in progress(batches, name):
        x_adv = make_adv(xb, yb).detach()
        check_in_ball(x_adv, xb, eps, name)
        out.append(correct_flags(model, x_adv, yb))
    return torch.cat(out)


def _torchattacks(kind: str, model: nn.Module, cfg: SuiteConfig, seed: int):
    import torchattacks

    if kind == "apgd-ce":
        return torchattacks.APGD(model, norm="Linf", eps=cfg.eps, steps=cfg.apgd_steps, n_restarts=1, loss="ce",
                                 seed=seed)
    if kind == "apgd-t":
        attack = torchattacks.APGDT(model, norm="Linf", eps=cfg.eps, steps=cfg.apgd_steps, n_restarts=1,
                                    seed=seed, n_classes=cfg.apgdt_targets + 1)
        return attack
    if kind == "square":
        return torchattacks.Square(model, norm="Linf", eps=cfg.eps, n_queries=cfg.square_queries, n_restarts=1,
                                   p_init=0.8, loss="margin", seed=seed)
    raise ValueError(f"unknown torchattacks attack {kind!r}")


def run_suite(model: nn.Module, x: Tensor, y: Tensor, cfg: SuiteConfig, *,
              transfer_sources: dict[str, nn.Module] | None = None,
              attacks: Sequence[str] | None = None, skip: Collection[str] = (),
              log: Callable[[str], None] = print) -> list[AttackResult]:
    """Every attack of the suite on ``model`` (eval mode, [0, 1] images to logits), on (x, y).

    ``transfer_sources`` maps a name to a model on which PGD is crafted and then scored on ``model``
    (the undefended classifier, another AE pipeline). ``attacks`` restricts the suite to some names;
    ``skip`` leaves out the names it holds. Returns one result per attack run, in the suite's order.
    """
    import time

    model.eval()
    results: list[AttackResult] = []
    wanted = set(attacks) if attacks is not None else None

    def add(name: str, kind: str, settings: dict, fn: Callable[[int], Tensor], seed: int | None = None) -> None:
        """Run attack ``name``, its seed derived from the stage seed and the name (``attack_seed``) unless given."""
        if (wanted is not None and name not in wanted) or name in skip:
            return
        seed = attack_seed(cfg.seed, name) if seed is None else seed
        start = time.perf_counter()
        flags = fn(seed)
        result = AttackResult(name, kind, {**settings, "eps": cfg.eps, "norm": "linf", "examples": len(x),
                                           "seed": seed}, flags, time.perf_counter() - start)
        results.append(result)
        log(f"  {name:28s} {100 * result.accuracy:6.2f}%  ({result.seconds:.0f}s)")

    paper = PGDConfig(eps=cfg.eps, alpha=cfg.paper_alpha, steps=max(cfg.paper_steps))
    paper_flags: dict[int, Tensor] = {}

    paper_seed = attack_seed(cfg.seed, "pgd-paper")

    def paper_protocol(k: int) -> Tensor:
        # one run serves every step count of the paper's protocol (recorded at each), from its own seed
        if not paper_flags:
            paper_flags.update(robust_flags(model, x, y, paper, record_at=cfg.paper_steps, seed=paper_seed))
        return paper_flags[k]

    for k in sorted(cfg.paper_steps):
        add(f"pgd{k}-paper", WHITE_BOX, {**PGDConfig(cfg.eps, cfg.paper_alpha, k).describe(),
                                         "library": "aaa_core",
                                         "note": "the paper's protocol: one run, recorded at each step count"},
            lambda seed, k=k: paper_protocol(k), seed=paper_seed)
    for loss in ("ce", "margin"):
        strong = PGDConfig(eps=cfg.eps, alpha=cfg.pgd_alpha, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts,
                           loss=loss)
        add(f"pgd{cfg.pgd_steps}-{loss}-x{cfg.pgd_restarts}", WHITE_BOX, {**strong.describe(), "library": "aaa_core"},
            lambda seed, strong=strong: robust_flags(model, x, y, strong, seed=seed)[strong.steps])
    for kind, settings in (
            ("apgd-ce", {"steps": cfg.apgd_steps, "restarts": 1, "loss": "ce", "rho": 0.75}),
            ("apgd-t", {"steps": cfg.apgd_steps, "restarts": 1, "target_classes": cfg.apgdt_targets,
                        "loss": "dlr-targeted"}),
            ("square", {"queries": cfg.square_queries, "restarts": 1, "p_init": 0.8, "loss": "margin"})):
        add(kind, QUERY_ONLY if kind == "square" else WHITE_BOX,
            {**settings, "library": "torchattacks 3.5.1"},
            lambda seed, kind=kind: batched_flags(model, _torchattacks(kind, model, cfg, seed), x, y, cfg.eps, kind))
    source_cfg = PGDConfig(eps=cfg.eps, alpha=cfg.paper_alpha, steps=cfg.transfer_steps)
    for source_name, source in (transfer_sources or {}).items():
        source.eval()
        add(f"transfer-from-{source_name}", TRANSFER,
            {**source_cfg.describe(), "crafted_on": source_name, "library": "aaa_core"},
            lambda seed, source=source, source_name=source_name: _transfer(model, source, x, y, source_cfg, seed,
                                                                            f"transfer from {source_name}"))
    return results


def _transfer(model: nn.Module, source: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, seed: int,
              name: str) -> Tensor:
    """PGD crafted on ``source``, scored on ``model``; one generator for all batches (no start repeats)."""
    generator = make_generator(seed, x.device)
    return batched_flags(model, lambda xb, yb: pgd(source, xb, yb, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                                                   generator=generator), x, y, cfg.eps, name)


def worst_case(results: Sequence[AttackResult]) -> Tensor:
    flags = torch.ones_like(results[0].flags)
    for r in results:
        flags &= r.flags
    return flags


def accuracy_curve(model: nn.Module, x: Tensor, y: Tensor, cfg: SuiteConfig) -> list[dict]:
    points = []
    for eps in cfg.curve_eps:
        attack = PGDConfig(eps=eps, alpha=2.5 * eps / cfg.curve_steps, steps=cfg.curve_steps)
        seed = attack_seed(cfg.seed, f"curve-eps{eps:g}")
        acc = robust_flags(model, x, y, attack, seed=seed)[attack.steps].float().mean().item()
        points.append({"eps": eps, "alpha": attack.alpha, "steps": attack.steps, "seed": seed, "accuracy": acc})
    return points


@dataclass
class SuiteReport:
    natural: float
    noise: float
    results: list[AttackResult]
    curve: list[dict]
    checks: list[Check] = field(default_factory=list)
    constant: dict | None = None   # see aaa_core.evaluation.checks.constant_output
    independent: dict[int, Tensor] = field(default_factory=dict)   # the steps check's runs: steps -> flags
    independent_seeds: dict[int, int] = field(default_factory=dict)
    noise_seed: int | None = None
    natural_flags: Tensor | None = None
    skipped: dict[str, str] = field(default_factory=dict)   # attacks left out for this dataset: name -> why

    @property
    def worst(self) -> float:
        return worst_case(self.results).float().mean().item()

    def as_dict(self) -> dict:
        return {"natural_accuracy": self.natural, "uniform_noise_accuracy": self.noise,
                "uniform_noise_seed": self.noise_seed, "natural_flags": encode_flags(self.natural_flags),
                "worst_case_accuracy": self.worst, "worst_case_flags": encode_flags(worst_case(self.results)), "attacks": [r.as_dict() for r in self.results],
                "accuracy_against_eps": self.curve, "constant_output": self.constant,
                "independent_runs": {f"pgd{k}": {"seed": self.independent_seeds.get(k),
                                                 "accuracy": f.float().mean().item()}
                                     for k, f in sorted(self.independent.items())},
                "checks": [asdict(c) for c in self.checks]}


def suite_checks(natural: float, noise: float, results: Sequence[AttackResult], curve: Sequence[dict],
                 cfg: SuiteConfig, n: int, constant: dict | None = None,
                 independent: dict[int, Tensor] | None = None) -> list[Check]:
    """The checks that fail the stage: curve falls to ~0, more steps not weaker, noise weak, no masked gradients.

    ``constant``: what ``constant_output`` found (a degenerate pipeline's accuracy cannot fall below the
    label share of the class it always predicts). ``independent``: the paper protocol's step counts as
    independent runs (steps -> flags, see ``paper_protocol_runs``); with fewer than two there is no steps
    check (the reported pgdK-paper results come from one run, where it could not fail)."""
    checks = []
    slack = 1.0 / max(n, 1) + ROUNDING    # one example of statistical wiggle between separately seeded runs
    accs = [p["accuracy"] for p in curve]
    checks.append(Check("accuracy_falls_with_eps", all(b <= a + slack for a, b in zip(accs, accs[1:])),
                        "accuracy by eps " + ", ".join(f"{p['eps']:g}: {p['accuracy']:.4f}" for p in curve)))
    checks.append(check_high_eps(accs[-1], curve[-1]["eps"], cfg.max_acc_at_high_eps, constant))
    if independent and len(independent) > 1:
        checks.append(check_more_steps_not_weaker(independent))
    white = [r for r in results if r.kind == WHITE_BOX]
    best = min(white, key=lambda r: r.accuracy)
    drop_attack, drop_noise = natural - best.accuracy, natural - noise
    checks.append(Check("noise_hurts_far_less_than_attack", drop_noise <= 0.5 * drop_attack + slack,
                        f"drop under uniform noise {drop_noise:.4f} <= half the drop under the best white-box "
                        f"attack ({best.name}) {drop_attack:.4f}"))
    for r in results:
        if r.kind in (QUERY_ONLY, TRANSFER):
            passed = r.accuracy >= best.accuracy - cfg.masking_tolerance - ROUNDING
            checks.append(Check(f"no_masked_gradients:{r.name}", passed,
                                f"{r.name} {r.accuracy:.4f} >= best white-box ({best.name}) {best.accuracy:.4f} "
                                f"- {cfg.masking_tolerance}" + ("" if passed else
                                "; it is not: GRADIENTS ARE MASKED and the white-box numbers overstate robustness")))
            # always enforced, acknowledged or not: an acknowledged masking finding may not grow past the cap
            capped = r.accuracy >= best.accuracy - cfg.masking_tolerance - cfg.max_masking_gap - ROUNDING
            checks.append(Check(f"masking_within_cap:{r.name}", capped,
                                f"{r.name} {r.accuracy:.4f} >= best white-box ({best.name}) {best.accuracy:.4f} "
                                f"- {cfg.masking_tolerance} - cap {cfg.max_masking_gap}"))
    return checks


def split_checks(checks: Sequence[Check], masking_acknowledged: bool) -> tuple[list[Check], list[Check]]:
    """(checks to enforce, masked-gradient findings reported instead of enforced).

    A masked-gradient failure is taken out of enforcement only when the pipeline is listed as a known,
    acknowledged finding; every other failed check stops the stage.
    """
    masking = [c for c in checks if c.name.startswith("no_masked_gradients") and not c.passed]
    if not masking_acknowledged:
        return list(checks), masking
    return [c for c in checks if c not in masking], masking


APGDT_MIN_CLASSES = 4   # APGD-T's targeted DLR loss reads the 3rd and 4th largest logits (as in AutoAttack)


def fit_to_classes(cfg: SuiteConfig, classes: int) -> tuple[SuiteConfig, dict[str, str], dict[str, Any]]:
    """The suite's targeted attack for a dataset of ``classes`` classes.

    Returns (the config to run, {attack: why it is skipped}, settings to record beside APGD-T's). With
    fewer than ``APGDT_MIN_CLASSES`` classes APGD-T is skipped, saying why; otherwise it targets at most the
    ``classes - 1`` other classes, and a larger ``apgdt_targets`` is limited to that and recorded. Every
    other attack is unchanged."""
    if classes < APGDT_MIN_CLASSES:
        return cfg, {"apgd-t": f"its targeted DLR loss reads the 3rd and 4th largest logits, so it needs at least "
                               f"{APGDT_MIN_CLASSES} classes; this dataset has {classes}"}, {}
    if cfg.apgdt_targets > classes - 1:
        return (replace(cfg, apgdt_targets=classes - 1), {},
                {"target_classes_configured": cfg.apgdt_targets,
                 "target_classes_limited": f"to the {classes - 1} other classes of a {classes}-class dataset"})
    return cfg, {}, {}


def evaluate_suite(model: nn.Module, x: Tensor, y: Tensor, cfg: SuiteConfig, *,
                   transfer_sources: dict[str, nn.Module] | None = None, classes: int | None = None,
                   log: Callable[[str], None] = print) -> SuiteReport:
    """The suite on ``model`` (eval mode, [0, 1] images to logits) on (x, y), as the robustness stage runs it.

    In: ``cfg`` (eps, budgets, stage seed: every attack, the noise and the checks' runs draw from
    ``attack_seed(cfg.seed, name)``); ``transfer_sources`` (name -> model the transfer PGD is crafted on);
    ``classes``, the dataset's class count (default: the width of the model's logits), which decides
    APGD-T's targets (``fit_to_classes``). Out: the report with natural and uniform-noise accuracy, every
    attack's per-example flags, the accuracy-against-eps curve, the steps check's independent runs, the
    sanity checks (``suite_checks``) and the attacks skipped for this dataset with the reason."""
    pred = predictions(model, x)
    natural = (pred == y).float().mean().item()
    if classes is None:
        with torch.no_grad():
            classes = int(model(x[:1]).shape[-1])
    run_cfg, skipped, targets = fit_to_classes(cfg, classes)
    noise_seed = attack_seed(cfg.seed, "uniform-noise")
    noise = noise_flags(model, x, y, cfg.eps, seed=noise_seed).float().mean().item()
    results = run_suite(model, x, y, run_cfg, transfer_sources=transfer_sources, skip=skipped, log=log)
    for r in results:
        if r.name == "apgd-t":
            r.settings.update(targets)
    curve = accuracy_curve(model, x, y, cfg)
    report = SuiteReport(natural, noise, results, curve, constant=constant_output(pred, y), noise_seed=noise_seed,
                         natural_flags=pred == y, skipped=skipped)
    report.independent, report.independent_seeds = paper_protocol_runs(model, x, y, cfg, results)
    report.checks = suite_checks(natural, noise, results, curve, cfg, len(x), report.constant,
                                 independent=report.independent)
    return report


def paper_protocol_runs(model: nn.Module, x: Tensor, y: Tensor, cfg: SuiteConfig,
                        results: Sequence[AttackResult]) -> tuple[dict[int, Tensor], dict[int, int]]:
    """The paper protocol's step counts as independent runs, for the steps check (aaa_core.evaluation.checks).

    The longest is the suite's own pgdK-paper result; each shorter step count runs again from its own random
    start (``attack_seed(seed, "pgdK-independent")``), as the evaluate stage's check does. Returns
    (steps -> flags, steps -> seed); empty when the suite ran without its paper protocol."""
    paper = {r.settings["steps"]: r.flags for r in results if r.name.endswith("-paper")}
    steps = sorted(cfg.paper_steps)
    if steps[-1] not in paper:
        return {}, {}
    runs, seeds = {steps[-1]: paper[steps[-1]]}, {steps[-1]: attack_seed(cfg.seed, "pgd-paper")}
    for k in steps[:-1]:
        seeds[k] = attack_seed(cfg.seed, f"pgd{k}-independent")
        runs[k] = robust_flags(model, x, y, PGDConfig(eps=cfg.eps, alpha=cfg.paper_alpha, steps=k),
                               seed=seeds[k])[k]
    return runs, seeds
