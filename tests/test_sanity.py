"""The evaluation's sanity checks must catch what they are meant to catch, on real models."""
import pytest
import torch
from torch import nn

from aaa_core.attacks import PGDConfig
from aaa_core.evaluation.checks import (check_high_eps, check_noise_weaker, check_steps_monotone, check_whitebox_beats_transfer, constant_output)
from aaa_core.evaluation.flags import noise_flags, predictions, robust_flags, transfer_flags

EPS = 0.3


class RoundInput(nn.Module):
    """Quantises its input to 16 grey levels: the classifier still works, but its gradient is zero."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(torch.round(x * 15) / 15)


def acc(flags) -> float:
    return flags.float().mean().item()


def test_masked_gradients_trip_the_whitebox_vs_transfer_check(trained_fc, mnist):
    x, y = mnist["x_test"][:300], mnist["y_test"][:300]
    masked = RoundInput(trained_fc).eval()
    cfg = PGDConfig(eps=EPS, alpha=0.01, steps=40)
    whitebox = acc(robust_flags(masked, x, y, cfg)[40])
    transfer = acc(transfer_flags(trained_fc, masked, x, y, cfg))
    assert whitebox > 0.5 and transfer < 0.2  # the defence only looks robust
    assert not check_whitebox_beats_transfer(whitebox, transfer, tolerance=0.01).passed
    # ... while the honest model passes it
    honest = acc(robust_flags(trained_fc, x, y, cfg)[40])
    assert check_whitebox_beats_transfer(honest, transfer, tolerance=0.01).passed


def test_high_eps_check(trained_fc, mnist):
    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    high = acc(robust_flags(trained_fc, x, y, PGDConfig(eps=1.0, alpha=0.1, steps=20))[20])
    assert check_high_eps(high, 1.0, 0.05).passed
    assert not check_high_eps(0.4, 1.0, 0.05).passed


def test_noise_and_monotonicity_checks(trained_fc, mnist):
    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    robust = acc(robust_flags(trained_fc, x, y, PGDConfig(eps=EPS, alpha=0.01, steps=40))[40])
    noise = acc(noise_flags(trained_fc, x, y, EPS))
    assert check_noise_weaker(noise, robust).passed
    assert not check_noise_weaker(0.1, 0.5).passed
    assert check_steps_monotone({40: 0.5, 200: 0.4}).passed
    assert not check_steps_monotone({40: 0.5, 200: 0.6}).passed


class ConstantClassifier(torch.nn.Module):
    """Always class 3, whatever the input (a collapsed AE in front of a classifier does this)."""

    def forward(self, x):
        logits = torch.zeros(len(x), 10)
        logits[:, 3] = 1.0
        return logits + 0 * x.flatten(1).sum(1, keepdim=True)


def test_constant_output_is_recognised_and_bounds_the_high_eps_check(trained_fc, mnist):
    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    const = constant_output(predictions(ConstantClassifier(), x), y)
    assert const is not None and const["class"] == 3 and const["share"] == 1.0
    assert const["label_share"] == pytest.approx((y == 3).float().mean().item())
    assert constant_output(predictions(trained_fc, x), y) is None      # a working classifier is not degenerate
    acc = const["label_share"]                            # what any attack leaves of a constant pipeline
    assert acc > 0.05
    assert not check_high_eps(acc, 1.0, 0.05).passed
    check = check_high_eps(acc, 1.0, 0.05, const)
    assert check.passed and "DEGENERATE" in check.detail
    assert not check_high_eps(acc + 0.06, 1.0, 0.05, const).passed


def test_a_check_exactly_at_its_threshold_passes_despite_float32_rounding():
    """5 of 100 examples is 0.0500000007 as a float32 mean: that is 'at most 5%', not a failure."""
    acc = (torch.arange(100) < 5).float().mean().item()
    assert acc > 0.05                                      # the rounding this guards against
    assert check_high_eps(acc, 0.5, 0.05).passed
    assert not check_high_eps((torch.arange(100) < 6).float().mean().item(), 0.5, 0.05).passed


def test_the_steps_check_is_paired_and_tolerates_the_noise_of_independent_starts():
    from aaa_core.evaluation.checks import check_more_steps_not_weaker, sign_test_p

    assert sign_test_p(10, 10) == 2 ** -10 and sign_test_p(0, 0) == 1.0 and sign_test_p(0, 5) == 1.0
    assert abs(sign_test_p(3, 4) - 5 / 16) < 1e-12
    few = torch.tensor([1, 1, 1, 0, 0, 1, 0, 1, 1, 1] * 10, dtype=torch.bool)
    # independent starts: 3 examples survive only the longer run, 1 only the shorter: chance, passes
    many = few.clone()
    many[[3, 4, 6]] = True
    many[0] = False
    assert check_more_steps_not_weaker({40: few, 200: many}).passed
    # a longer run that lets 12 more examples through and catches none: fails, naming the counts
    i = torch.arange(100)
    broken = few | (i % 10 == 3) | ((i < 20) & (i % 10 == 4))
    check = check_more_steps_not_weaker({40: few, 200: broken})
    assert not check.passed and "12 examples survive only the longer run, 0 only the shorter" in check.detail


def test_the_steps_check_fails_on_a_planted_step_rule_fault_in_a_real_attack(trained_fc, mnist):
    """Two independent PGD runs on a trained model: sound (step 0.01 at 40 and 200 steps) passes; a planted
    fault (the longer run's step divided by its step count, as a broken step rule would) fails."""
    from aaa_core.attacks import PGDConfig
    from aaa_core.evaluation.checks import check_more_steps_not_weaker
    from aaa_core.evaluation.flags import robust_flags

    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    few = robust_flags(trained_fc, x, y, PGDConfig(eps=0.1, alpha=0.01, steps=40), seed=1)[40]
    many = robust_flags(trained_fc, x, y, PGDConfig(eps=0.1, alpha=0.01, steps=200), seed=0)[200]
    assert check_more_steps_not_weaker({40: few, 200: many}).passed
    faulty = robust_flags(trained_fc, x, y, PGDConfig(eps=0.1, alpha=0.01 / 200, steps=200), seed=0)[200]
    check = check_more_steps_not_weaker({40: few, 200: faulty})
    assert not check.passed, check.detail


def test_the_evaluation_protocol_reports_what_it_ran_and_checks_it(trained_fc, mnist):
    from aaa_core.evaluation.protocols import evaluate_pipeline

    report = evaluate_pipeline(trained_fc, mnist["x_test"][:300], mnist["y_test"][:300], subset=100, eps=0.1,
                               alpha=0.01, steps=[10, 5], restarts=1, sanity_eps=1.0, sanity_alpha=0.1,
                               sanity_steps=10, sanity_subset=50, sanity_max_acc=0.05, seed=3)
    from aaa_core.runtime import attack_seed

    out = report.as_dict()
    # every attack and check draws from its own seed, derived from the stage seed (3) and its name
    paper, independent5 = attack_seed(3, "pgd-paper"), attack_seed(3, "pgd5-independent")
    assert out["attack"]["examples"] == 100 and out["attack"]["steps"] == 10 and out["attack"]["seed"] == paper
    assert list(out["robust_accuracy"]) == ["pgd5", "pgd10"]
    assert out["robust_accuracy"]["pgd10"] <= out["robust_accuracy"]["pgd5"] < out["natural_accuracy"]
    # the steps check ran on an independent run of the smaller step count, with its own seed
    runs = out["sanity"]["independent_runs"]
    assert runs["pgd5"]["seed"] == independent5 and runs["pgd10"]["seed"] == paper
    # the noise is not PGD's random start: drawn with the attack's seed it would be exactly that input
    noise, high = out["sanity"]["uniform_noise"]["seed"], out["sanity"]["high_eps"]["seed"]
    assert noise == attack_seed(3, "uniform-noise") and high == attack_seed(3, "sanity-high-eps")
    assert len({paper, independent5, noise, high}) == 4
    # the per-example flags are stored, one character per example of the subset
    assert len(out["natural_flags"]) == 100 and set(out["robust_flags"]) == {"pgd5", "pgd10"}
    assert out["robust_flags"]["pgd10"].count("1") == round(100 * out["robust_accuracy"]["pgd10"])
    names = [c["name"] for c in out["sanity"]["checks"]]
    assert names == ["accuracy_near_zero_at_high_eps", "noise_weaker_than_attack",
                     "more_steps_not_weaker_independent_runs"] and all(c.passed for c in report.checks)
    assert out["transfer_attack"] is None   # a classifier alone: nothing to transfer from


def test_noise_with_the_attacks_seed_would_be_pgds_random_start():
    """Why every attack and check has its own seed: with the attack's seed, noise_flags' draw is PGD's random
    start; attack_seed gives the noise check another stream."""
    from aaa_core.attacks import random_start_linf
    from aaa_core.runtime import attack_seed, generator

    x, eps = torch.full((8, 1, 4, 4), 0.5), 0.3
    pgd_start = random_start_linf(x, eps, generator(attack_seed(3, "pgd-paper"))) - x
    same_seed = (torch.rand(x.shape, generator=generator(attack_seed(3, "pgd-paper"))) * 2 - 1) * eps
    own_seed = (torch.rand(x.shape, generator=generator(attack_seed(3, "uniform-noise"))) * 2 - 1) * eps
    assert torch.allclose(same_seed, pgd_start, atol=1e-6)
    assert (own_seed - pgd_start).abs().max() > 0.1
