"""The adaptive-attack suite: each attack works, the worst case is per example, each check catches its fault."""
import pytest
import torch

from aaa_core.suite import (QUERY_ONLY, TRANSFER, AttackResult, SuiteConfig, check_in_ball, evaluate_suite,
                            run_suite, suite_checks, worst_case)
from tests.test_sanity import RoundInput

CFG = SuiteConfig(eps=0.3, paper_alpha=0.01, paper_steps=[10, 20], pgd_steps=20, pgd_alpha=0.03, pgd_restarts=2,
                  apgd_steps=20, apgdt_targets=2, square_queries=300, transfer_steps=10,
                  curve_eps=[0.0, 0.1, 0.3, 1.0], curve_steps=10, max_acc_at_high_eps=0.05, masking_tolerance=0.02)


def by_name(report):
    return {r.name: r for r in report.results}


def test_every_attack_breaks_an_undefended_classifier(trained_fc, mnist):
    x, y = mnist["x_test"][:100], mnist["y_test"][:100]
    report = evaluate_suite(trained_fc, x, y, CFG, transfer_sources={"itself": trained_fc}, log=lambda _: None)
    results = by_name(report)
    assert set(results) == {"pgd10-paper", "pgd20-paper", "pgd20-ce-x2", "pgd20-margin-x2", "apgd-ce", "apgd-t",
                            "square", "transfer-from-itself"}
    assert report.natural > 0.85
    for r in report.results:
        assert r.accuracy < 0.2, r.name
        assert {"eps", "norm", "examples", "seed"} <= set(r.settings)
    assert report.worst <= min(r.accuracy for r in report.results)
    assert all(c.passed for c in report.checks), [c for c in report.checks if not c.passed]
    # the steps check pairs the suite's PGD-20 with PGD-10 run again from its own start (seed + 1)
    assert report.independent_seeds == {20: 0, 10: 1} and torch.equal(report.independent[20], results["pgd20-paper"].flags)
    assert "more_steps_not_weaker_independent_runs" in {c.name for c in report.checks}
    assert set(report.as_dict()["independent_runs"]) == {"pgd10", "pgd20"}
    # the noise is not PGD's random start (the same seed would draw exactly that input)
    assert report.noise_seed != CFG.seed and report.as_dict()["uniform_noise_seed"] == report.noise_seed


def test_masked_gradients_trip_the_query_only_check(trained_fc, mnist):
    """A model that rounds its input looks robust to every gradient attack; Square sees through it."""
    x, y = mnist["x_test"][:100], mnist["y_test"][:100]
    masked = RoundInput(trained_fc).eval()
    results = run_suite(masked, x, y, CFG, attacks=["pgd10-paper", "pgd20-paper", "pgd20-ce-x2", "apgd-ce",
                                                    "square"], log=lambda _: None)
    named = {r.name: r for r in results}
    assert named["apgd-ce"].accuracy > 0.5 and named["square"].accuracy < 0.3
    checks = {c.name: c for c in suite_checks(0.9, 0.9, results, [{"eps": 0.0, "accuracy": 0.9},
                                                                  {"eps": 1.0, "accuracy": 0.0}], CFG, len(x))}
    assert not checks["no_masked_gradients:square"].passed
    assert "GRADIENTS ARE MASKED" in checks["no_masked_gradients:square"].detail


def flags(*values):
    return torch.tensor(values, dtype=torch.bool)


def test_worst_case_is_per_example():
    a = AttackResult("a", "white-box", {}, flags(1, 1, 0, 1))
    b = AttackResult("b", QUERY_ONLY, {}, flags(1, 0, 1, 1))
    assert worst_case([a, b]).tolist() == [True, False, False, True]  # 50%, below both attacks' 75%


def f(acc, n=100):
    return torch.arange(n) < round(acc * n)


def independent(few=0.6, many=0.55):
    """The steps check's independent runs (PGD-40 and PGD-200 from their own starts), as flags."""
    return {40: f(few), 200: f(many)}


def make_results(white=0.5, square=0.6, paper=(0.6, 0.55)):

    return [AttackResult("pgd40-paper", "white-box", {"steps": 40}, f(paper[0])),
            AttackResult("pgd200-paper", "white-box", {"steps": 200}, f(paper[1])),
            AttackResult("apgd-ce", "white-box", {}, f(white)),
            AttackResult("square", QUERY_ONLY, {}, f(square)),
            AttackResult("transfer-from-dnn", TRANSFER, {}, f(0.7))]


GOOD_CURVE = [{"eps": 0.0, "accuracy": 0.99}, {"eps": 0.3, "accuracy": 0.5}, {"eps": 1.0, "accuracy": 0.0}]


@pytest.mark.parametrize("fault,results,curve,noise,runs,check", [
    ("curve rises", make_results(), [{"eps": 0.0, "accuracy": 0.5}, {"eps": 0.3, "accuracy": 0.7},
                                     {"eps": 1.0, "accuracy": 0.0}], 0.98, independent(), "accuracy_falls_with_eps"),
    ("robust at eps 1", make_results(), [{"eps": 0.0, "accuracy": 0.99}, {"eps": 1.0, "accuracy": 0.3}], 0.98,
     independent(), "accuracy_near_zero_at_high_eps"),
    # 10 examples survive only the longer independent run, none only the shorter: p = 2^-10
    ("more steps help", make_results(), GOOD_CURVE, 0.98, independent(0.5, 0.6),
     "more_steps_not_weaker_independent_runs"),
    ("noise as bad as attack", make_results(), GOOD_CURVE, 0.6, independent(), "noise_hurts_far_less_than_attack"),
    ("query-only wins", make_results(square=0.3), GOOD_CURVE, 0.98, independent(), "no_masked_gradients:square"),
])
def test_each_check_catches_its_fault(fault, results, curve, noise, runs, check):
    checks = {c.name: c for c in suite_checks(0.99, noise, results, curve, CFG, 100, independent=runs)}
    assert not checks[check].passed, fault
    assert sum(not c.passed for c in checks.values()) == 1, [c.name for c in checks.values() if not c.passed]
    assert all(c.passed for c in suite_checks(0.99, 0.98, make_results(), GOOD_CURVE, CFG, 100,
                                              independent=independent()))


def test_the_suite_steps_check_uses_independent_runs_and_fails_on_a_planted_step_fault():
    """The paper-protocol results of one run cannot make the steps check fail (their longer counts are never
    fooled up to step k, so never above the shorter); the independent runs can: a model whose attack only
    lands in the short run (planted) fails it, a sound pair passes. No steps check without two counts."""
    from aaa_core.suite import paper_protocol_runs
    results = make_results()
    sound = {c.name: c for c in suite_checks(0.99, 0.98, results, GOOD_CURVE, CFG, 100, independent=independent())}
    assert sound["more_steps_not_weaker_independent_runs"].passed
    assert "more_steps_not_weaker_independent_runs" not in {
        c.name for c in suite_checks(0.99, 0.98, results, GOOD_CURVE, CFG, 100, independent={200: f(0.5)})}
    assert paper_protocol_runs(None, None, None, CFG, [r for r in results if "paper" not in r.name]) == ({}, {})


def test_points_outside_the_ball_are_refused():
    x = torch.full((2, 1, 2, 2), 0.5)
    with pytest.raises(ValueError, match="outside the L-inf ball"):
        check_in_ball(x + 0.31, x, 0.3, "buggy")
    check_in_ball(x + 0.3, x, 0.3, "fine")


def test_acknowledged_masking_is_reported_not_enforced_and_nothing_else_is_waived():
    from aaa_core.suite import split_checks
    checks = suite_checks(0.99, 0.98, make_results(square=0.3), GOOD_CURVE, CFG, 100)
    enforced, masking = split_checks(checks, masking_acknowledged=False)
    assert [c.name for c in masking] == ["no_masked_gradients:square"] and any(not c.passed for c in enforced)
    enforced, masking = split_checks(checks, masking_acknowledged=True)
    assert all(c.passed for c in enforced) and len(masking) == 1
    other = suite_checks(0.99, 0.98, make_results(square=0.3), GOOD_CURVE[:1] + [{"eps": 1.0, "accuracy": 0.5}],
                         CFG, 100)
    enforced, _ = split_checks(other, masking_acknowledged=True)
    assert [c.name for c in enforced if not c.passed] == ["accuracy_near_zero_at_high_eps"]
