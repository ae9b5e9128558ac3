"""AutoAttack at its published settings (Croce & Hein 2020, standard version): APGD-CE, APGD-T, FAB-T and
Square from torchattacks, run as a cascade on the whole defended pipeline, each with its own seed."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor, nn

from aaa_core.evaluation.flags import correct_flags
from aaa_core.evaluation.suite import check_in_ball

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
