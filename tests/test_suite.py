"""The adaptive-attack suite: each attack works, the worst case is per example, each check catches its fault."""
import pytest
import torch

from aaa_core.evaluation.suite import (QUERY_ONLY, TRANSFER, AttackResult, SuiteConfig, check_in_ball, evaluate_suite, run_suite, suite_checks, worst_case)
from aaa_core.runtime import attack_seed
from aaa_core.stats import encode_flags
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
    # the steps check pairs the suite's PGD-20 (the paper protocol's one run) with PGD-10 run again from its own
    # start (its own seed)
    paper_seed = attack_seed(CFG.seed, "pgd-paper")
    assert report.independent_seeds == {20: paper_seed, 10: attack_seed(CFG.seed, "pgd10-independent")}
    assert torch.equal(report.independent[20], results["pgd20-paper"].flags)
    assert results["pgd10-paper"].settings["seed"] == results["pgd20-paper"].settings["seed"] == paper_seed
    assert "more_steps_not_weaker_independent_runs" in {c.name for c in report.checks}
    assert set(report.as_dict()["independent_runs"]) == {"pgd10", "pgd20"}
    # every other attack's seed is attack_seed(stage seed, its name); the paper protocol's one run, "pgd-paper"
    assert all(r.settings["seed"] == attack_seed(CFG.seed, r.name) for r in report.results
               if not r.name.endswith("-paper"))
    # the noise is not PGD's random start (the same seed would draw exactly that input)
    assert report.noise_seed == attack_seed(CFG.seed, "uniform-noise") != paper_seed
    assert report.as_dict()["uniform_noise_seed"] == report.noise_seed
    # the metrics hold per-example flags, one character per example
    out = report.as_dict()
    assert len(out["natural_flags"]) == len(out["worst_case_flags"]) == len(x)
    assert all(a["flags"] == encode_flags(results[a["name"]].flags) for a in out["attacks"])


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
    from aaa_core.evaluation.suite import paper_protocol_runs
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
    from aaa_core.evaluation.suite import split_checks
    checks = suite_checks(0.99, 0.98, make_results(square=0.3), GOOD_CURVE, CFG, 100)
    enforced, masking = split_checks(checks, masking_acknowledged=False)
    assert [c.name for c in masking] == ["no_masked_gradients:square"] and any(not c.passed for c in enforced)
    enforced, masking = split_checks(checks, masking_acknowledged=True)
    assert all(c.passed for c in enforced) and len(masking) == 1
    other = suite_checks(0.99, 0.98, make_results(square=0.3), GOOD_CURVE[:1] + [{"eps": 1.0, "accuracy": 0.5}],
                         CFG, 100)
    enforced, _ = split_checks(other, masking_acknowledged=True)
    assert [c.name for c in enforced if not c.passed] == ["accuracy_near_zero_at_high_eps"]


TINY = SuiteConfig(eps=0.2, paper_alpha=0.05, paper_steps=[2, 4], pgd_steps=3, pgd_alpha=0.05, pgd_restarts=2,
                   apgd_steps=2, apgdt_targets=2, square_queries=5, transfer_steps=2, curve_eps=[0.1, 0.2],
                   curve_steps=2, max_acc_at_high_eps=0.05, masking_tolerance=0.02, seed=5)


def tiny_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()


def test_every_attack_and_every_restart_draws_its_own_random_start(monkeypatch):
    """Two attacks (or two restarts, or two batches) from one seed draw the same random start, so the worst case
    over them counts one start twice and the noise check can be an attack's own step 0. Every random stream the
    suite opens (aaa_core generators, torchattacks' seeds) is seeded differently, and every PGD start differs."""
    import aaa_core.attacks
    import aaa_core.evaluation.flags
    import aaa_core.evaluation.suite
    from aaa_core.attacks import PGDConfig
    from aaa_core.evaluation.flags import robust_flags
    from aaa_core.runtime import generator

    opened, starts = [], []     # seeds of every random stream, every PGD random start (as noise in [-1, 1])

    def recording_generator(seed, device="cpu"):
        opened.append(seed)
        return generator(seed, device)

    original_torchattacks, original_start = aaa_core.evaluation.suite._torchattacks, aaa_core.attacks.random_start_linf

    def recording_torchattacks(kind, model, cfg, seed):
        opened.append(seed)   # APGD and Square seed torch's global generator with it for their own start
        return original_torchattacks(kind, model, cfg, seed)

    def recording_start(x, eps, generator=None):
        start = original_start(x, eps, generator)
        starts.append((start - x) / eps)   # x lies in [0.25, 0.75] and eps <= 0.25: no clipping at [0, 1]
        return start

    for module in (aaa_core.evaluation.flags, aaa_core.evaluation.suite):
        monkeypatch.setattr(module, "make_generator", recording_generator)
    monkeypatch.setattr(aaa_core.evaluation.suite, "_torchattacks", recording_torchattacks)
    monkeypatch.setattr(aaa_core.attacks, "random_start_linf", recording_start)

    model, source = tiny_model(0), tiny_model(1)
    x = 0.25 + 0.5 * torch.rand((6, 1, 4, 4), generator=generator(0))
    y = torch.arange(6)
    report = evaluate_suite(model, x, y, TINY, transfer_sources={"other": source}, log=lambda _: None)

    # paper protocol (one run for both step counts), its independent PGD-2, PGD-3 ce and margin, APGD-CE, APGD-T,
    # Square, transfer, two curve points and the uniform noise: 11 streams, each from its own seed
    assert len(opened) == 11 and len(set(opened)) == len(opened), opened
    # what the report records is what ran: each attack's seed (the paper protocol's: its one run's) was opened
    recorded = [r.settings["seed"] for r in report.results]
    recorded += [p["seed"] for p in report.curve] + [report.noise_seed, report.independent_seeds[2]]
    assert set(recorded) == set(opened)
    # the PGD starts: paper run, independent run, 2 restarts each of ce and margin, transfer, 2 curve points
    assert len(starts) == 9
    for i in range(len(starts)):
        for j in range(i):
            assert (starts[i] - starts[j]).abs().max() > 0.1, f"PGD starts {j} and {i} are the same draw"

    # one attack's restarts and batches continue one stream: 2 restarts x 2 batches, 4 different starts
    starts.clear()
    robust_flags(model, x, y, PGDConfig(eps=0.2, alpha=0.05, steps=2, restarts=2), seed=TINY.seed, batch_size=3)
    assert len(starts) == 4
    for i in range(4):
        for j in range(i):
            assert (starts[i] - starts[j]).abs().max() > 0.1, f"restart/batch starts {j} and {i} are the same draw"


def linear_model(classes, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, classes)).eval()


@pytest.mark.parametrize("classes, given", [(3, True), (3, False), (5, True), (5, False), (10, False)])
def test_apgdt_is_fitted_to_the_classes_and_nothing_else_changes(classes, given):
    """APGD-T's targeted DLR loss reads the 3rd and 4th largest logits and targets the other classes: on fewer than
    4 classes it is skipped, saying why; on fewer than apgdt_targets + 1 it is limited to classes - 1 targets,
    recorded beside its settings. Every other attack, the noise, the curve and the checks run as on 10 classes,
    from the same seeds. The class count is a parameter, or else the width of the model's logits."""
    from dataclasses import replace

    from aaa_core.runtime import generator

    cfg = replace(TINY, apgdt_targets=6)
    model = linear_model(classes)
    x = torch.rand((6, 1, 4, 4), generator=generator(0))
    y = torch.arange(6) % classes
    report = evaluate_suite(model, x, y, cfg, classes=classes if given else None, log=lambda _: None)
    names = [r.name for r in report.results]
    assert names == ["pgd2-paper", "pgd4-paper", "pgd3-ce-x2", "pgd3-margin-x2", "apgd-ce",
                     *(["apgd-t"] if classes >= 4 else []), "square"]
    assert all(r.settings["seed"] == attack_seed(cfg.seed, "pgd-paper" if r.name.endswith("-paper") else r.name)
               for r in report.results)
    assert report.noise_seed == attack_seed(cfg.seed, "uniform-noise") and set(report.independent) == {2, 4}
    assert "more_steps_not_weaker_independent_runs" in {c.name for c in report.checks}
    if classes < 4:
        assert set(report.skipped) == {"apgd-t"} and f"this dataset has {classes}" in report.skipped["apgd-t"]
        return
    assert report.skipped == {}
    apgdt = by_name(report)["apgd-t"].settings
    if classes == 5:
        assert apgdt["target_classes"] == 4 and apgdt["target_classes_configured"] == 6
        assert "4 other classes of a 5-class dataset" in apgdt["target_classes_limited"]
    else:
        assert apgdt["target_classes"] == 6 and "target_classes_limited" not in apgdt


def test_the_robustness_stage_refuses_a_malformed_run_option_naming_it(tmp_path):
    from pathlib import Path

    from click.testing import CliRunner

    from stages.robustness import main

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "data.pt").write_bytes(b"")
    result = CliRunner().invoke(main, ["--dataset", "mnist", "--run", "dnn", "--metrics-dir", str(tmp_path / "out"),
                                       "--data", str(tmp_path / "data.pt"), "--params", str(root / "params.yaml")])
    assert result.exit_code == 2, result.output
    assert "--run" in result.output and "expected NAME=CLASSIFIER.pt or NAME=AE.pt+CLASSIFIER.pt" in result.output
