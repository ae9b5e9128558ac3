"""The paper's evaluation protocol on one pipeline, as a function that returns a report (stage evaluate).

Natural accuracy on the whole test set and on the first ``subset`` images; white-box L-inf PGD through the
whole pipeline at every step count of ``threat.eval_steps`` (one run recorded at each count: an example is
robust only if no iterate up to the count fools it); and the sanity checks that must be able to fail:
accuracy near zero at a huge eps, uniform noise weaker than the attack, independent runs with more steps not
weaker (``aaa_core.evaluation.checks``), and for an AE pipeline, white-box PGD at least as strong as the same PGD crafted
on the undefended classifier and transferred. ``stages/evaluate.py`` loads, calls, writes. Under torchrun
every attack is sharded over the processes (``aaa_core.evaluation.sharded``), with the one-process numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from aaa_core.attacks import PGDConfig
from aaa_core.evaluation.checks import (
    Check,
    check_high_eps,
    check_more_steps_not_weaker,
    check_noise_weaker,
    check_whitebox_beats_transfer,
    constant_output,
)
from aaa_core.evaluation.sharded import (
    noise_flags,
    predictions,
    robust_flags,
    transfer_flags,
)
from aaa_core.runtime import attack_seed
from aaa_core.stats import encode_flags


def _mean(flags: Tensor) -> float:
    return flags.float().mean().item()


@dataclass
class EvaluationReport:
    natural_full: float                    # the whole test set
    natural: float                         # the first ``examples`` test images
    robust: dict[int, Tensor]              # step count -> per-example robust flags (one run)
    natural_flags: Tensor                  # per example of the subset: correct on the clean image
    attack: PGDConfig
    examples: int
    seed: int
    sanity: dict = field(default_factory=dict)
    transfer: dict | None = None
    checks: list[Check] = field(default_factory=list)

    def robust_accuracy(self) -> dict[str, float]:
        return {f"pgd{k}": _mean(f) for k, f in sorted(self.robust.items())}

    def as_dict(self) -> dict:
        """The measured part of the stage's metrics JSON."""
        return {"natural_accuracy_full_test": self.natural_full, "natural_accuracy": self.natural,
                "robust_accuracy": self.robust_accuracy(),
                "natural_flags": encode_flags(self.natural_flags),
                "robust_flags": {f"pgd{k}": encode_flags(f) for k, f in sorted(self.robust.items())},
                "attack": {**self.attack.describe(), "examples": self.examples, "seed": self.seed,
                           "precision": "float32",
                           "robust_means": "never misclassified at any iterate up to the step count, in every "
                                           "restart"},
                "transfer_attack": self.transfer,
                "sanity": {**self.sanity, "checks": [c.as_dict() for c in self.checks]}}


def evaluate_pipeline(model: nn.Module, x_test: Tensor, y_test: Tensor, *, subset: int, eps: float, alpha: float,
                      steps: list[int], restarts: int, sanity_eps: float, sanity_alpha: float, sanity_steps: int,
                      sanity_subset: int, sanity_max_acc: float, seed: int, transfer_source: nn.Module | None = None,
                      transfer_tolerance: float = 0.0, source_name: str = "") -> EvaluationReport:
    """The protocol above on ``model`` ([0, 1] images to logits, eval mode). ``transfer_source``: the
    undefended classifier of an AE pipeline (PGD at the first step count crafted on it and scored on
    ``model``); None for a classifier alone. ``subset`` 0: the whole test set."""
    n = subset or len(x_test)
    x, y = x_test[:n], y_test[:n]
    seed_pgd = attack_seed(seed, "pgd-paper")
    steps = sorted(steps)
    attack = PGDConfig(eps=eps, alpha=alpha, steps=steps[-1], restarts=restarts)
    natural_pred = predictions(model, x_test)
    natural_flags = natural_pred == y_test
    flags = robust_flags(model, x, y, attack, record_at=steps, seed=seed_pgd)
    report = EvaluationReport(_mean(natural_flags), _mean(natural_flags[:n]), {k: flags[k] for k in steps},
                              natural_flags[:n], attack, n, seed_pgd)

    high = PGDConfig(eps=sanity_eps, alpha=sanity_alpha, steps=sanity_steps)
    xs, ys = x[:sanity_subset], y[:sanity_subset]
    high_seed = attack_seed(seed, "sanity-high-eps")
    high_acc = _mean(robust_flags(model, xs, ys, high, seed=high_seed)[high.steps])
    noise_seed = attack_seed(seed, "uniform-noise")
    noise_acc = _mean(noise_flags(model, x, y, eps, seed=noise_seed))
    constant = constant_output(natural_pred[:len(xs)], ys)   # xs: the first test images too
    # The steps check needs independent runs: the reported step counts come from one run, where more steps
    # cannot raise accuracy by construction. So each smaller step count is run again on its own, from its
    # own random start (its own seed), and paired with the longest run.
    independent, seeds = {steps[-1]: flags[steps[-1]]}, {steps[-1]: seed_pgd}
    for k in steps[:-1]:
        seeds[k] = attack_seed(seed, f"pgd{k}-independent")
        independent[k] = robust_flags(model, x, y, PGDConfig(eps=eps, alpha=alpha, steps=k, restarts=restarts),
                                      seed=seeds[k])[k]
    report.checks = [check_high_eps(high_acc, high.eps, sanity_max_acc, constant),
                     check_noise_weaker(noise_acc, _mean(flags[steps[-1]]))]
    if len(steps) > 1:
        report.checks.append(check_more_steps_not_weaker(independent))
    if transfer_source is not None:
        source = PGDConfig(eps=eps, alpha=alpha, steps=steps[0])
        transfer_seed = attack_seed(seed, "transfer")
        report.transfer = {"attack": {**source.describe(), "crafted_on": source_name, "seed": transfer_seed},
                           "accuracy": _mean(transfer_flags(transfer_source, model, x, y, source,
                                                            seed=transfer_seed))}
        report.checks.append(check_whitebox_beats_transfer(_mean(flags[steps[0]]), report.transfer["accuracy"],
                                                           transfer_tolerance))
    report.sanity = {"high_eps": {**high.describe(), "examples": len(xs), "seed": high_seed, "accuracy": high_acc},
                     "constant_output": constant,
                     "independent_runs": {f"pgd{k}": {"seed": seeds[k], "accuracy": _mean(f)}
                                          for k, f in sorted(independent.items())},
                     "uniform_noise": {"eps": eps, "seed": noise_seed, "accuracy": noise_acc}}
    return report
