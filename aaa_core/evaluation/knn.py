"""kNN latent reconstruction: replace an input's latent by the mean of its k nearest training latents.

Exact search is a matrix product: ``|q - b|^2 = |q|^2 - 2 q.b + |b|^2``, computed in query chunks, with
``topk`` per chunk. 10,000 queries against 60,000 latents of 12,544 dimensions (Fashion-MNIST) is about
15 TFLOP, so it runs at the machine's matrix-product rate (``benchmarks/knn.py`` prints both).

The kNN step is piecewise constant in the input: its gradient is zero almost everywhere, so a plain
white-box attack through it is blind. ``KNNDefended(..., bpda=True)`` gives the straight-through (BPDA,
Athalye et al. 2018) gradient: forward through the kNN mean, backward as if the latent passed unchanged.
``knn_protocol`` attacks AE + kNN (non-adaptive PGD, BPDA PGD, APGD-CE through the straight-through gradient,
Square) and the same AE without kNN the same way, and keeps every attack's per-example flags and seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from aaa_core.attacks import PGDConfig, pgd_iterates
from aaa_core.evaluation.checks import Check
from aaa_core.evaluation.flags import ROUNDING, correct_flags, robust_flags
from aaa_core.evaluation.suite import check_in_ball
from aaa_core.models import Defended
from aaa_core.runtime import attack_seed
from aaa_core.runtime import generator as make_generator
from aaa_core.stats import encode_flags, mcnemar


@torch.no_grad()
def knn_indices(queries: Tensor, bank: Tensor, k: int, *, chunk: int = 1024,
                bank_sq: Tensor | None = None) -> Tensor:
    """Indices (Q, k) of the k nearest rows of ``bank`` (N, D) to each row of ``queries`` (Q, D), exact, L2.

    Ties and order: the k nearest in ascending distance, as ``topk`` returns them.
    """
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, the bank {bank.shape[1]}")
    if not 0 < k <= len(bank):
        raise ValueError(f"k={k} must be in 1..{len(bank)} (the bank size)")
    queries, bank = queries.float(), bank.float()
    bank_sq = (bank * bank).sum(1) if bank_sq is None else bank_sq
    out = []
    for q in queries.split(chunk):
        # |q|^2 is the same for every bank row of a query, so it does not change the ranking.
        dist = torch.addmm(bank_sq, q, bank.T, beta=1.0, alpha=-2.0)
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


class LatentBank(nn.Module):
    """The latents of the training set, flattened, and their squared norms (kept for every search)."""

    def __init__(self, latents: Tensor, k: int = 10) -> None:
        super().__init__()
        flat = latents.detach().float().flatten(1)
        self.latent_shape = tuple(latents.shape[1:])
        self.k = k
        self.register_buffer("latents", flat)
        self.register_buffer("sq_norms", (flat * flat).sum(1))

    def neighbour_mean(self, z: Tensor, chunk: int = 1024) -> Tensor:
        """Mean of the k nearest bank latents of each row of z, in z's shape; no gradient flows to z."""
        idx = knn_indices(z.detach().flatten(1), self.latents, self.k, chunk=chunk, bank_sq=self.sq_norms)
        return self.latents[idx].mean(1).view(len(z), *self.latent_shape).to(z.dtype)


@torch.no_grad()
def encode_all(ae: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    ae.eval()
    return torch.cat([ae.encode(xb) for xb in x.split(batch_size)])


class KNNDefended(nn.Module):
    """images -> encode -> mean of the k nearest training latents -> decode -> classifier -> logits.

    ``bpda=False``: the true pipeline (its input gradient is zero: the kNN output does not depend on x
    continuously). ``bpda=True``: the same forward values, with the straight-through gradient
    d(kNN mean)/dz := identity, which is how an adaptive attacker differentiates through the kNN step.
    """

    def __init__(self, ae: nn.Module, classifier: nn.Module, bank: LatentBank, *, bpda: bool = False) -> None:
        super().__init__()
        self.ae, self.classifier, self.bank, self.bpda = ae, classifier, bank, bpda

    def forward(self, x: Tensor) -> Tensor:
        z = self.ae.encode(x)
        z_knn = self.bank.neighbour_mean(z)
        if self.bpda:
            z_knn = z + (z_knn - z).detach()
        else:
            z_knn = z_knn + 0.0 * z   # the true derivative: zero (kept in the graph so attacks can run)
        return self.classifier(self.ae.decode(z_knn))



def per_example_worst(flags: Sequence[Tensor]) -> Tensor:
    """The per-example worst case of several attacks on one pipeline: robust only if robust under every one.

    ``flags``: one or more (N,) bool tensors, each "still correct after that attack" on the same N examples in
    the same order. Returns their logical AND, (N,) bool.
    """
    if not flags:
        raise ValueError("the worst case needs the flags of at least one attack")
    out = torch.ones_like(flags[0], dtype=torch.bool)
    for f in flags:
        if f.shape != out.shape or f.dtype != torch.bool:
            raise ValueError(f"per-example flags must all be bool of shape {tuple(out.shape)}, got "
                             f"{f.dtype} of shape {tuple(f.shape)}")
        out = out & f
    return out


@dataclass
class Run:
    """One attack on one pipeline, as the metrics record it.

    ``flags``: per example, (N,) bool, still correct on the scoring pipeline after the attack; keyed by
    ``pgd<steps>`` for a PGD run recorded at each step count, or ``all`` for an attack without a step schedule
    (APGD, Square). ``seeds``: every seed the attack drew from, in order (restart by restart, batch by batch).
    ``restarts``: for an attack run as separate restarts, each restart (its flags under ``all``); the run's own
    ``flags["all"]`` is then their AND (robust = correct after every restart). ``settings``: what it was.
    """
    flags: dict[str, Tensor]
    seeds: list[int]
    settings: dict
    restarts: list["Run"] = field(default_factory=list)
    seconds: float = 0.0

    def at(self, steps: int) -> Tensor:
        """(N,) bool: the flags that count in the worst case at PGD-``steps``: that step count's for a PGD run,
        the attack's one set of flags otherwise."""
        return self.flags[f"pgd{steps}" if f"pgd{steps}" in self.flags else "all"]

    def as_dict(self) -> dict:
        """Accuracy and '0'/'1' flags (``stats.encode_flags``) per key, seeds, settings, seconds, restarts."""
        out = {"accuracy": {k: f.float().mean().item() for k, f in self.flags.items()},
               "flags": {k: encode_flags(f) for k, f in self.flags.items()},
               "seeds": list(self.seeds), "settings": self.settings, "seconds": round(self.seconds, 1)}
        if self.restarts:
            out["restarts"] = [{"seeds": list(r.seeds), "accuracy": r.flags["all"].float().mean().item(),
                                "flags": encode_flags(r.flags["all"]), "seconds": round(r.seconds, 1)}
                               for r in self.restarts]
        return out


def library_attack_flags(scorer: nn.Module, make_attack: Callable[[int], Callable[[Tensor, Tensor], Tensor]],
                         x: Tensor, y: Tensor, *, eps: float, stage_seed: int, name: str,
                         batch_size: int = 256) -> tuple[Tensor, list[int]]:
    """A library attack (torchattacks) on (x, y), batch by batch, each batch from its own seed, scored on ``scorer``.

    ``x``: (N, C, H, W) images in [0, 1]; ``y``: (N,) int64 labels; ``make_attack(seed)`` builds the attack, a
    callable (xb, yb) -> adversarial images of xb's shape. Batch 0 draws from ``attack_seed(stage_seed, name)``,
    batch b > 0 from ``attack_seed(stage_seed, f"{name}/batch{b}")``, so no two batches repeat a random start.
    Every output must lie in the L-inf ball of ``eps`` around its image and in [0, 1] (``ValueError`` otherwise)
    before ``scorer`` classifies it. Returns ((N,) bool: ``scorer`` still correct on the output, the seeds in
    batch order).
    """
    flags, seeds = [], []
    for b, (xb, yb) in enumerate(zip(x.split(batch_size), y.split(batch_size))):
        seed = attack_seed(stage_seed, name if b == 0 else f"{name}/batch{b}")
        x_adv = make_attack(seed)(xb, yb).detach()
        check_in_ball(x_adv, xb, eps, name)
        flags.append(correct_flags(scorer, x_adv, yb))
        seeds.append(seed)
    return torch.cat(flags), seeds


def library_name() -> str:
    """The attack library and its version, as the metrics record it ("torchattacks 3.5.1")."""
    import torchattacks

    return f"torchattacks {torchattacks.__version__}"


def apgd_ce(model: nn.Module, eps: float, steps: int) -> Callable[[int], Callable[[Tensor, Tensor], Tensor]]:
    """seed -> one APGD-CE restart (torchattacks, L-inf, rho 0.75, no EOT) taking its gradient from ``model``."""
    import torchattacks

    return lambda seed: torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce",
                                          rho=0.75, eot_iter=1, seed=seed)


def square_attack(model: nn.Module, eps: float, queries: int) -> Callable[[int], Callable[[Tensor, Tensor], Tensor]]:
    """seed -> Square (torchattacks, L-inf, margin loss, p_init 0.8, one restart) querying ``model``."""
    import torchattacks

    return lambda seed: torchattacks.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1,
                                            p_init=0.8, loss="margin", seed=seed)


def apgd_with_restarts(attacked: nn.Module, scorer: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int,
                       restarts: int, stage_seed: int, name: str) -> Run:
    """APGD-CE run ``restarts`` times on (x, y), each restart separately from its own seed, every restart's
    output scored on ``scorer``; robust = correct after every restart.

    ``attacked`` gives the gradient and APGD's own step decisions (for kNN: the straight-through pipeline);
    ``scorer`` decides what counts (for kNN: the true pipeline). ``x``: (N, C, H, W) in [0, 1], ``y``: (N,).
    Restart i draws from ``attack_seed(stage_seed, f"{name}-r{i}")`` (and ``.../batch<b>`` beyond the first
    256 images). Returns a ``Run`` with ``flags["all"]`` (N,) bool and one ``Run`` per restart.
    """
    if restarts < 1:
        raise ValueError(f"APGD needs at least one restart, got {restarts}")
    runs = []
    for r in range(restarts):
        start = time.perf_counter()
        flags, seeds = library_attack_flags(scorer, apgd_ce(attacked, eps, steps), x, y, eps=eps,
                                            stage_seed=stage_seed, name=f"{name}-r{r}")
        runs.append(Run({"all": flags}, seeds, {"restart": r, "seed_name": f"{name}-r{r}"},
                        seconds=time.perf_counter() - start))
    settings = {"attack": "APGD-CE", "norm": "linf", "eps": eps, "steps": steps, "restarts": restarts,
                "loss": "ce", "rho": 0.75, "eot_iter": 1, "library": library_name(),
                "seed_names": [f"{name}-r{r}" for r in range(restarts)],
                "robust": "correct on the scoring pipeline after every restart (each restart run separately)"}
    return Run({"all": per_example_worst([r.flags["all"] for r in runs])}, [s for r in runs for s in r.seeds],
               settings, restarts=runs, seconds=sum(r.seconds for r in runs))


@dataclass
class KNNReport:
    """What ``knn_protocol`` measured on N examples: per-example flags, the checks, the timings.

    ``runs``: "knn" (AE + kNN) and "plain_ae" (the same AE without kNN) -> attack name -> ``Run``; ``worst``:
    the same two -> PGD step count -> (N,) bool, the per-example AND of that pipeline's runs. ``flags`` keeps
    the layout the renderers read: "non_adaptive", "bpda", "worst_case" (kNN's, every attack) and
    "plain_ae_same_examples", each step count -> (N,) bool.
    """
    natural: Tensor                        # AE + kNN on the clean images
    plain_natural: Tensor                  # the plain AE (no kNN) on the same images
    flags: dict[str, dict[int, Tensor]]   # attack name -> step count -> still correct
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    square: Tensor | None = None           # Square (query-only) on the true kNN pipeline: still correct
    square_queries: int = 0
    runs: dict[str, dict[str, Run]] = field(default_factory=dict)
    worst: dict[str, dict[int, Tensor]] = field(default_factory=dict)

    def robust_accuracy(self) -> dict:
        acc = {name: {f"pgd{k}": f.float().mean().item() for k, f in by_steps.items()}
               for name, by_steps in self.flags.items()}
        if self.square is not None:
            acc["square"] = {f"queries{self.square_queries}": self.square.float().mean().item()}
        return acc

    def square_only(self) -> dict:
        """Per step count: examples Square fools that every gradient attack on kNN (non-adaptive, BPDA PGD and,
        where it ran, APGD-BPDA) missed."""
        if self.square is None:
            return {}
        apgd = self.runs.get("knn", {}).get("apgd_bpda")
        return {f"pgd{k}": int((self.flags["non_adaptive"][k] & self.flags["bpda"][k]
                                & (apgd.flags["all"] if apgd is not None else True) & ~self.square).sum())
                for k in self.flags["bpda"]}

    def seeds(self) -> dict[str, list[int]]:
        """Every seed drawn, by seed name (``knn-`` dropped): one per batch of each attack and restart; no seed
        is drawn twice."""
        out = {}
        for by_name in self.runs.values():
            for run in by_name.values():
                for r in run.restarts or [run]:
                    out.setdefault(r.settings["seed_name"].removeprefix("knn-"), r.seeds)
        return out

    def worst_case(self) -> dict:
        """Per pipeline ("knn", "plain_ae") and step count ("pgd<k>"): accuracy and '0'/'1' flags of the
        per-example worst case, and which attacks it covers."""
        out = {pipeline: {f"pgd{k}": {"accuracy": f.float().mean().item(), "flags": encode_flags(f)}
                          for k, f in sorted(by_steps.items())} for pipeline, by_steps in self.worst.items()}
        out["attacks"] = {pipeline: list(runs) for pipeline, runs in self.runs.items()}
        return out

    def paired_worst_case(self) -> dict:
        """Per step count ("pgd<k>"): the exact two-sided McNemar test (``verdicts.mcnemar``) of kNN's worst
        case against the plain AE's on the same examples: the discordant counts and the p-value."""
        out = {}
        for k in sorted(self.worst.get("knn", {})):
            counts = mcnemar(self.worst["knn"][k].tolist(), self.worst["plain_ae"][k].tolist())
            out[f"pgd{k}"] = {"test": "exact two-sided McNemar (aaa_core.stats.mcnemar)",
                              "first": "knn worst case", "second": "plain_ae worst case",
                              "knn_only": counts.first_only, "plain_ae_only": counts.second_only,
                              "both": counts.both, "neither": counts.neither, "p_value": counts.p_value}
        return out


def knn_protocol(ae: nn.Module, classifier: nn.Module, bank: LatentBank, x: Tensor, y: Tensor, *, eps: float,
                 alpha: float, steps: list[int], bpda_tolerance: float, seed: int,
                 square_queries: int = 0, apgd_restarts: int = 2, apgd_steps: int | None = None) -> KNNReport:
    """AAA + kNN (Tables 9 and 10) attacked every way below on (x, y), and the plain AE attacked the same way
    on the same examples.

    ``x``: (N, C, H, W) test images in [0, 1]; ``y``: (N,) int64 labels; ``steps``: PGD step counts, one run
    recorded at each; ``seed``: the stage seed, from which every attack and restart derives its own
    (``attack_seed(seed, name)``, names "knn-..."). On AE + kNN: (1) non-adaptive, the paper's protocol: PGD
    crafted on AE + classifier without the kNN step (final iterate at each step count), classified with it;
    (2) BPDA PGD: the straight-through gradient through the kNN step, robust = never fooled at any iterate;
    (3) with ``apgd_restarts`` > 0, APGD-CE (``apgd_steps`` steps, default the largest of ``steps``) on the
    straight-through pipeline, each restart from its own seed, every restart's output classified by the true
    kNN pipeline; (4) with ``square_queries`` > 0, Square (query-only, margin loss) on the true kNN pipeline,
    which needs no gradient, so a straight-through gradient that misleads (2) and (3) cannot hide robustness
    from it. The worst case per example and step count is the AND of all of them. The plain AE gets the same
    on the same examples: the non-adaptive attack's adversarial examples (white-box for it, final iterate), its
    own PGD (never fooled at any iterate), APGD-CE with the same steps and restarts, Square at the same query
    budget, and their per-example worst case; ``KNNReport.paired_worst_case`` tests the two worst cases against
    each other. Check: BPDA is not weaker than the non-adaptive attack by more than ``bpda_tolerance`` (else
    the BPDA attack is broken). ``KNNReport.square_only`` counts what Square found that the gradient attacks
    did not.
    """
    target = KNNDefended(ae, classifier, bank).eval()
    straight = KNNDefended(ae, classifier, bank, bpda=True).eval()
    plain = Defended(ae, classifier).eval()
    steps = sorted(steps)
    apgd_steps = steps[-1] if apgd_steps is None else apgd_steps
    seconds = {}
    t = time.perf_counter()
    natural = correct_flags(target, x, y)
    seconds["natural_eval"] = time.perf_counter() - t
    pgd = {**PGDConfig(eps=eps, alpha=alpha, steps=steps[-1]).describe(), "recorded_at": steps, "library": "aaa_core"}
    runs: dict[str, dict[str, Run]] = {"knn": {}, "plain_ae": {}}
    bpda_gradient, own_gradient = "straight-through (BPDA) through the kNN step", "the plain AE + classifier's own"
    true_knn, plain_name = "the true kNN pipeline", "the plain AE + classifier"

    # (1) one run gives every step count's final iterate (the same as separate runs: tests/test_attacks.py);
    # one generator over all batches
    t = time.perf_counter()
    na_seed = attack_seed(seed, "knn-non-adaptive")
    gen_plain = make_generator(na_seed, x.device)
    iterates = [pgd_iterates(plain, xb, yb, eps=eps, alpha=alpha, at=steps, generator=gen_plain)
                for xb, yb in zip(x.split(256), y.split(256))]
    adversarial = {k: torch.cat([it[k] for it in iterates]) for k in steps}
    for k in steps:
        check_in_ball(adversarial[k], x, eps, f"non-adaptive PGD-{k}")
    non_adaptive = {k: correct_flags(target, adversarial[k], y) for k in steps}
    plain_ae = {k: correct_flags(plain, adversarial[k], y) for k in steps}
    seconds["non_adaptive"] = time.perf_counter() - t
    plain_natural = correct_flags(plain, x, y)
    runs["knn"]["non_adaptive"] = Run(
        {f"pgd{k}": f for k, f in non_adaptive.items()}, [na_seed],
        {**pgd, "seed_name": "knn-non-adaptive", "crafted_on": "the plain AE + classifier (no kNN)",
         "scored_on": true_knn, "robust": "correct at the final iterate"}, seconds=seconds["non_adaptive"])
    runs["plain_ae"]["pgd_same_examples"] = Run(
        {f"pgd{k}": f for k, f in plain_ae.items()}, [na_seed],
        {**pgd, "seed_name": "knn-non-adaptive", "crafted_on": f"{plain_name} (white-box)", "scored_on": plain_name,
         "robust": "correct at the final iterate",
         "note": "the very adversarial examples of the non-adaptive attack on kNN"})
    # (2) PGD with a gradient: the straight-through one for kNN, the plain AE's own from its own seed
    for pipeline, key, model, name, gradient, scored_on in (
            ("knn", "bpda", straight, "knn-bpda", bpda_gradient, true_knn),
            ("plain_ae", "pgd", plain, "knn-plain-pgd", own_gradient, plain_name)):
        t = time.perf_counter()
        flags = robust_flags(model, x, y, PGDConfig(eps=eps, alpha=alpha, steps=steps[-1]), record_at=steps,
                             seed=attack_seed(seed, name))
        seconds[f"{pipeline}_{key}"] = time.perf_counter() - t
        runs[pipeline][key] = Run({f"pgd{k}": flags[k] for k in steps}, [attack_seed(seed, name)],
                                  {**pgd, "seed_name": name, "gradient": gradient, "scored_on": scored_on,
                                   "robust": "never fooled at any iterate"}, seconds=seconds[f"{pipeline}_{key}"])
    # (3) APGD-CE, each restart on its own
    if apgd_restarts > 0:
        for pipeline, key, attacked, scorer, name, gradient, scored_on in (
                ("knn", "apgd_bpda", straight, target, "knn-apgd", bpda_gradient, true_knn),
                ("plain_ae", "apgd", plain, plain, "knn-plain-apgd", own_gradient, plain_name)):
            run = apgd_with_restarts(attacked, scorer, x, y, eps=eps, steps=apgd_steps, restarts=apgd_restarts,
                                     stage_seed=seed, name=name)
            run.settings.update(gradient=gradient, scored_on=scored_on)
            seconds[f"{pipeline}_{key}"] = run.seconds
            runs[pipeline][key] = run
    # (4) Square, query-only, at one budget for both
    if square_queries > 0:
        for pipeline, model, name, scored_on in (("knn", target, "knn-square", f"{true_knn} (no gradient needed)"),
                                                 ("plain_ae", plain, "knn-plain-square", plain_name)):
            t = time.perf_counter()
            flags, seeds = library_attack_flags(model, square_attack(model, eps, square_queries), x, y, eps=eps,
                                                stage_seed=seed, name=name)
            seconds[f"{pipeline}_square"] = time.perf_counter() - t
            runs[pipeline]["square"] = Run(
                {"all": flags}, seeds,
                {"attack": "Square", "norm": "linf", "eps": eps, "queries": square_queries, "restarts": 1,
                 "p_init": 0.8, "loss": "margin", "library": library_name(), "seed_name": name, "on": scored_on},
                seconds=seconds[f"{pipeline}_square"])
    worst = {pipeline: {k: per_example_worst([r.at(k) for r in by_name.values()]) for k in steps}
             for pipeline, by_name in runs.items()}
    bpda = runs["knn"]["bpda"]
    report = KNNReport(natural, plain_natural,
                       {"non_adaptive": non_adaptive, "bpda": {k: bpda.at(k) for k in steps},
                        "worst_case": worst["knn"], "plain_ae_same_examples": plain_ae},
                       seconds=seconds, square=runs["knn"]["square"].flags["all"] if square_queries > 0 else None,
                       square_queries=square_queries, runs=runs, worst=worst)
    acc = report.robust_accuracy()
    allowed = bpda_tolerance + ROUNDING
    report.checks = [Check("bpda_not_weaker_than_non_adaptive",
                           all(acc["bpda"][f"pgd{k}"] <= acc["non_adaptive"][f"pgd{k}"] + allowed for k in steps),
                           f"BPDA accuracy {acc['bpda']} must not exceed the non-adaptive {acc['non_adaptive']} "
                           f"by more than {bpda_tolerance}")]
    return report
