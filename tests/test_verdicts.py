"""aaa_core.reporting.verdicts and the renderers that use it: the exact paired test on known counts, the stratified test
across seeds, pairing refused on different example sets, the collapse rule, and no "tie" in any report.

Every expected p-value is computed here from the binomial distribution with math.comb, never by the code under
test; every planted case is built so that the interval-overlap rule these verdicts replaced would have said
"tie" (or so that a swapped or pooled count would give another answer).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from aaa_core.errors import AAAError
from aaa_core.reporting.verdicts import (ALPHA, NO_FLAGS, Scored, collapse_reason, example_count, example_set, format_p, judge, judge_pooled, percent, words)
from aaa_core.stats import Discordant, mcnemar, pooled

ROOT = Path(__file__).resolve().parents[1]
TIE = re.compile(r"\bties?\b", re.IGNORECASE)


def binomial_two_sided(k: int, n: int) -> float:
    """The textbook exact two-sided p of k of n at 1/2 (symmetric: twice the smaller tail, at most 1)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_flags(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[str, str]:
    """Two flag strings over the same examples with exactly these paired counts (shuffled by a fixed stride,
    so the discordant examples are not all at one end)."""
    pairs = [("1", "0")] * a_only + [("0", "1")] * b_only + [("1", "1")] * both + [("0", "0")] * neither
    n = len(pairs)
    stride = next(s for s in range(7, 7 + n + 1) if math.gcd(s, n) == 1) if n > 1 else 1
    order = [(i * stride) % n for i in range(n)]
    return "".join(pairs[i][0] for i in order), "".join(pairs[i][1] for i in order)


# ---- the exact paired test ----

@pytest.mark.parametrize("b, c, expected", [(15, 1, 0.000518798828125), (13, 6, 0.1670684814453125), (0, 0, 1.0),
                                            (1, 15, 0.000518798828125), (5, 0, 0.0625), (30, 12, None)])
def test_mcnemar_on_known_counts(b, c, expected):
    expected = binomial_two_sided(b, b + c) if expected is None else expected
    assert expected == pytest.approx(binomial_two_sided(b, b + c), rel=1e-12)     # the table is the textbook's
    first, second = paired_flags(b, c, both=40, neither=7)
    counts = mcnemar(first, second)
    assert (counts.first_only, counts.second_only, counts.both, counts.neither) == (b, c, 40, 7)
    assert counts.p_value == pytest.approx(expected, rel=1e-9)


def test_the_verdict_words():
    assert words("AAA", "Madry", Discordant(15, 1)).text == "AAA better (p = 0.0005; 15 vs 1 discordant)"
    assert words("AAA", "Madry", Discordant(13, 6)).text == "inconclusive (p = 0.17; 13 vs 6 discordant)"
    nothing = words("AAA", "Madry", Discordant(0, 0))
    assert nothing.text == "inconclusive (p = 1; 0 vs 0 discordant)" and nothing.p == 1.0 and nothing.better is None
    # the threshold: 0.05 itself is not below it, the p printed is never rounded across it
    assert ALPHA == 0.05 and format_p(0.0483) == "0.048" and format_p(0.0517) == "0.052"
    assert format_p(0.0498) == "0.0498" and format_p(0.0503) == "0.0503"
    assert percent(0.97215) == "97.2%"


def test_swapping_the_pair_order_flips_the_counts_not_the_winner_and_swapping_the_flags_flips_the_winner():
    a, b = paired_flags(15, 1, both=60, neither=24)
    forward = judge(Scored("AAA", 0.75, 100, a, "set"), Scored("Madry", 0.61, 100, b, "set"))
    backward = judge(Scored("Madry", 0.61, 100, b, "set"), Scored("AAA", 0.75, 100, a, "set"))
    assert forward.better == backward.better == "AAA"
    assert (forward.counts.first_only, forward.counts.second_only) == (15, 1)
    assert (backward.counts.first_only, backward.counts.second_only) == (1, 15)
    assert forward.text == backward.text == "AAA better (p = 0.0005; 15 vs 1 discordant)"
    swapped = judge(Scored("AAA", 0.61, 100, b, "set"), Scored("Madry", 0.75, 100, a, "set"))
    assert swapped.better == "Madry" and swapped.text.startswith("Madry better")


def test_flags_as_autoattack_keeps_them_pair_with_flag_strings():
    a, b = paired_flags(15, 1, both=4)
    counts = mcnemar([int(v) for v in a], b)
    assert (counts.first_only, counts.second_only) == (15, 1)


# ---- what cannot be paired ----

def test_flags_on_different_example_sets_are_refused():
    a, b = paired_flags(15, 1, both=60, neither=24)
    got = judge(Scored("AAA", 0.75, 100, a, "sha-one"), Scored("Madry", 0.61, 100, b, "sha-two"))
    assert got.outcome == "not paired" and got.counts is None and got.p is None
    assert got.text.startswith("not paired: different examples")
    assert "AAA 75.0 [65.7, 82.5] on 100" in got.text and "Madry 61.0" in got.text     # the intervals instead
    # a record that names no example set cannot be paired either
    assert judge(Scored("AAA", 0.75, 100, a, None), Scored("Madry", 0.61, 100, b, "sha-two")).outcome == "not paired"
    # the same hash but flags of different lengths: the metrics contradict themselves
    with pytest.raises(AAAError, match="different lengths"):
        judge(Scored("AAA", 0.75, 100, a, "s"), Scored("Madry", 0.61, 99, b[:-1], "s"))


def test_the_example_set_is_read_wherever_a_stage_records_it():
    record = {"n": 500, "seed": 0, "indices_sha256": "abc"}
    assert example_set({"examples": record}) == "abc" and example_count({"examples": record}) == 500
    assert example_set({"examples": 100, "subset": record}) == "abc" and example_count({"examples": 100}) == 100
    assert example_set({"attack": {"subset": record}, "examples": 100}) == "abc"
    assert example_set({"examples": 100}) is None and example_count({"attack": {"examples": 7}}) == 7


def test_metrics_without_flags_get_no_verdict():
    got = judge(Scored("AAA", 0.75, 100), Scored("Madry", 0.95, 100))
    assert got.outcome == "no flags" and got.text == NO_FLAGS == "no per-example flags: not compared"


# ---- the stratified test across seeds ----

def test_the_stratified_test_pools_the_discordant_counts_of_the_seeds():
    strata = [Discordant(5, 0), Discordant(5, 1), Discordant(5, 0)]
    assert all(d.p_value > ALPHA for d in strata)                   # no seed alone separates them
    total = pooled(strata)
    assert (total.first_only, total.second_only) == (15, 1)
    assert total.p_value == pytest.approx(binomial_two_sided(15, 16), rel=1e-9)
    sides = []
    for i, d in enumerate(strata):
        a, b = paired_flags(d.first_only, d.second_only, both=50 + i, neither=3)
        sides.append((f"seed {i}", Scored("AAA", 0.8, len(a), a, f"set{i}"), Scored("Madry", 0.7, len(b), b, f"set{i}")))
    got = judge_pooled(sides, "AAA", "Madry")
    assert got.text == "AAA better (p = 0.0005; 15 vs 1 discordant) over 3 seeds"
    assert got.notes == ("seed 0: 5 vs 0", "seed 1: 5 vs 1", "seed 2: 5 vs 0")
    # the other order: the same winner, the notes in the text's order (the winner's count first)
    back = judge_pooled([(lab, m, a) for lab, a, m in sides], "Madry", "AAA")
    assert back.better == "AAA" and back.notes == got.notes and (back.counts.first_only, back.counts.second_only) == (1, 15)


def test_the_stratified_test_pairs_each_seed_on_its_own_examples():
    a, b = paired_flags(5, 0, both=10)
    sides = [("seed 0", Scored("AAA", 0.8, 15, a, "x"), Scored("Madry", 0.7, 15, b, "x")),
             ("seed 1", Scored("AAA", 0.8, 15, a, "x"), Scored("Madry", 0.7, 15, b, "y"))]
    got = judge_pooled(sides, "AAA", "Madry")
    assert got.outcome == "not paired" and "seed 1" in got.text and got.counts is None
    no_flags = [sides[0], ("seed 1", Scored("AAA", 0.8, 15), Scored("Madry", 0.7, 15))]
    assert judge_pooled(no_flags, "AAA", "Madry").text == f"{NO_FLAGS} (seed 1)"


# ---- the collapse rule ----

def test_a_collapsed_pipeline_is_left_out_of_the_verdict_and_says_why():
    assert collapse_reason(0.40, 0.98) == "collapsed: natural 40.0% vs classifier alone 98.0%"
    assert collapse_reason(0.49, 0.98) is None and collapse_reason(0.4899, 0.98) is not None   # half exactly: kept
    assert collapse_reason(0.1, None) is None                         # classifier alone unknown: not judged
    a, b = paired_flags(15, 1, both=10)
    got = judge(Scored("AE", 0.9, 26, a, "s", collapse_reason(0.2, 0.98)), Scored("Madry", 0.4, 26, b, "s"))
    assert got.outcome == "collapsed" and got.counts is None
    assert got.text == "not compared: AE collapsed: natural 20.0% vs classifier alone 98.0%"
    # across seeds: the collapsed seed is left out and named, the others still pooled
    c, d = paired_flags(15, 1, both=10)
    strata = [("seed 0", Scored("AE", 0.9, 26, c, "s"), Scored("M", 0.4, 26, d, "s")),
              ("seed 1", Scored("AE", 0.9, 26, a, "s", collapse_reason(0.2, 0.98)), Scored("M", 0.4, 26, b, "s"))]
    pooled_verdict = judge_pooled(strata, "AE", "M")
    assert pooled_verdict.text.startswith("AE better (p = 0.0005; 15 vs 1 discordant) over 1 seed; left out: seed 1")


# ---- the renderers ----

def evaluate_record(loss, mode, natural, robust, flags=None, natural_flags=None, sha="same", classifier=None,
                    n=100):
    arch = "dnn"
    return {"label": "MNIST", "data_source": "test",
            "pipeline": {"classifier_arch": arch, "classifier_kwargs": {}, "classifier_mode": mode, "ae_loss": loss,
                         "ae": f"models/ae_{loss}.pt" if loss else None,
                         "classifier": classifier or ("models/dnn_adv.pt" if mode == "adversarial" else "models/dnn.pt")},
            "natural_accuracy": natural, "robust_accuracy": {"pgd200": robust}, "attack": {"examples": n, "steps": 200},
            **({"examples": {"n": n, "seed": 0, "indices_sha256": sha}} if sha else {}),
            **({"robust_flags": {"pgd200": flags}} if flags is not None else {}),
            **({"natural_flags": natural_flags} if natural_flags is not None else {})}


def test_the_table_verdict_against_madry_is_paired_and_never_a_tie():
    from aaa_core.reporting.tables import table, versus_madry

    # 75% against 61% on 100 examples: the Wilson intervals overlap (the old rule: "a tie"), the pairing does not
    aaa_flags, madry_flags = paired_flags(15, 1, both=60, neither=24)
    aaa = evaluate_record("ce_mse", "natural", 0.97, 0.75, aaa_flags)
    madry = evaluate_record(None, "adversarial", 0.97, 0.61, madry_flags)
    natural = evaluate_record(None, "natural", 0.98, 0.0)
    text = versus_madry([natural, madry, aaa], {}, "ce_mse", "dnn", [200])
    assert "under PGD-200, AAA 75.00 [65.7, 82.5] against Madry 61.00 [51.2, 70.0]: AAA better (p = 0.0005; " \
           "15 vs 1 discordant)" in text
    assert not TIE.search(text)
    # on different example sets: refused, with the intervals
    other = evaluate_record(None, "adversarial", 0.97, 0.61, madry_flags, sha="another")
    assert "not paired: different examples" in versus_madry([natural, other, aaa], {}, "ce_mse", "dnn", [200])
    # a collapsed AAA: marked in the table, left out of the verdict with the reason
    broken = evaluate_record("ce_mse", "natural", 0.30, 0.75, aaa_flags)
    text = versus_madry([natural, madry, broken], {}, "ce_mse", "dnn", [200])
    assert "not compared: AAA collapsed: natural 30.0% vs classifier alone 98.0%" in text
    assert "AAA better" not in text and "p = " not in text
    df = table([natural, madry, broken], {}, "ce_mse", "dnn", [200])
    assert list(df["Model"])[-1] == ("AAA, L_ce+mse (headline) [collapsed: natural 30.0% vs classifier alone 98.0%]")
    # old metrics without flags: said, not invented
    plain = versus_madry([natural, evaluate_record(None, "adversarial", 0.97, 0.61, sha=None),
                          evaluate_record("ce_mse", "natural", 0.97, 0.75, sha=None)], {}, "ce_mse", "dnn", [200])
    assert "no per-example flags: not compared" in plain and not TIE.search(plain)


def test_the_robustness_verdict_and_the_knn_verdict_are_paired():
    from aaa_core.reporting.tables import knn_versus_plain, verdict

    def suite(loss, mode, worst, flags, spec):
        m = evaluate_record(loss, mode, 0.97, 0.0)
        return {**m, "pipeline": {**m["pipeline"], "spec": spec}, "worst_case_accuracy": worst,
                "worst_case_flags": flags, "examples": 100, "subset": {"n": 100, "seed": 0, "indices_sha256": "s"}}

    m_flags, a_flags = paired_flags(13, 6, both=50, neither=31)      # 63% against 56%: inconclusive
    text = verdict([suite(None, "adversarial", 0.63, m_flags, "models/dnn_adv.pt"),
                    suite("ce_mse", "natural", 0.56, a_flags, "models/ae_ce_mse.pt+models/dnn.pt")])
    assert "AAA, L_ce+mse, DNN 56.00 [46.2, 65.3] (-7.00 points): inconclusive (p = 0.17; 6 vs 13 discordant)" in text
    assert not TIE.search(text)

    knn = evaluate_record("ce_mse", "natural", 0.98, 0.0)
    with_knn, plain = paired_flags(15, 1, both=60, neither=24)
    knn.update(plain_ae_natural_accuracy=0.99,
               robust_accuracy={"non_adaptive": {"pgd200": 0.8}, "bpda": {"pgd200": 0.8},
                                "worst_case": {"pgd200": 0.75}, "plain_ae_same_examples": {"pgd200": 0.61}},
               flags={"worst_case": {"pgd200": with_knn}, "plain_ae_same_examples": {"pgd200": plain}})
    df = knn_versus_plain([knn], "ce_mse", "dnn", [200])
    assert list(df["PGD-200 verdict"]) == ["kNN better (p = 0.0005; 15 vs 1 discordant)"]
    del knn["flags"]
    assert list(knn_versus_plain([knn], "ce_mse", "dnn", [200])["PGD-200 verdict"]) == [NO_FLAGS]


def test_the_ablation_report_pairs_each_variant_with_the_study(tmp_path):
    from stages import render_ablations

    study, var = tmp_path / "study", tmp_path / "var"
    for sub in ("train", "evaluate"):
        (study / sub).mkdir(parents=True)
    var.mkdir()
    history = [{"loss": 1.3}, {"loss": 0.64}]
    nat_s, nat_v = paired_flags(2, 1, both=95, neither=2)           # 97% against 96%: inconclusive
    pgd_v, pgd_s = paired_flags(15, 1, both=60, neither=24)          # 75% against 61%: the variant better
    (study / "train/ae_ce_mse.json").write_text(json.dumps({"history": history}))
    (var / "train_w10.json").write_text(json.dumps({"history": history}))
    for c in ("dnn", "fc"):
        (study / f"evaluate/{c}.json").write_text(json.dumps(evaluate_record(None, "natural", 0.98, 0.0)))
        (study / f"evaluate/ae_ce_mse-{c}.json").write_text(json.dumps(
            evaluate_record("ce_mse", "natural", 0.97, 0.61, pgd_s, nat_s)))
    (var / "evaluate_w10-dnn.json").write_text(json.dumps(evaluate_record("ce_mse", "natural", 0.96, 0.75, pgd_v, nat_v)))
    (var / "evaluate_w10-fc.json").write_text(json.dumps(evaluate_record("ce_mse", "natural", 0.30, 0.75, pgd_v, nat_v)))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"mnist": {"w10": {"warm_epochs": 0, "mse_weight": 10.0}}}))
    result = CliRunner().invoke(render_ablations.main, [
        "--dataset", "mnist", "--study-dir", str(study), "--dir", str(var), "--out", str(tmp_path / "r.md"),
        "--summary", str(tmp_path / "s.json"), "--params", str(ROOT / "params.yaml"), "--ablations",
        str(tmp_path / "a.yaml"), "--paper", str(ROOT / "paper/reported_results.yaml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.md").read_text()
    assert not TIE.search(text)
    line = next(x for x in text.splitlines() if x.startswith("- w10:"))
    assert line == ("- w10: dnn natural: inconclusive (p = 1; 1 vs 2 discordant); dnn pgd: w10 better (p = 0.0005; "
                    "15 vs 1 discordant); fc natural: not compared: w10 collapsed: natural 30.0% vs classifier alone "
                    "98.0%; fc pgd: not compared: w10 collapsed: natural 30.0% vs classifier alone 98.0%")
    assert "| w10 [FC collapsed: natural 30.0% vs classifier alone 98.0%] |" in text
    against = json.loads((tmp_path / "s.json").read_text())["mnist"]["w10"]["against_study"]
    assert against == {"dnn natural": "inconclusive", "dnn pgd": "higher", "fc natural": "collapsed",
                       "fc pgd": "collapsed"}


def comparison_metrics(study: Path, comp: Path, strata: dict[int, tuple[int, int]], autoattack_flags=True):
    """Seeds 0.. of AAA and Madry with the PGD flags of each seed planted as (AAA only, Madry only) counts."""
    for seed, (a_only, m_only) in strata.items():
        aaa_pgd, madry_pgd = paired_flags(a_only, m_only, both=70, neither=30 - a_only - m_only)
        for name, pgd in (("ae_ce_mse-dnn", aaa_pgd), ("dnn_adv", madry_pgd)):
            ev = evaluate_record("ce_mse" if name.startswith("ae") else None,
                                 "natural" if name.startswith("ae") else "adversarial", 0.97,
                                 pgd.count("1") / len(pgd), pgd, "1" * 100, sha=f"order{seed}")
            rb = {"worst_case_accuracy": 0.7, "examples": 100}                     # old metrics: no flags
            aa = {"autoattack_accuracy": pgd.count("1") / 100, "examples": 100, "natural_accuracy": 0.97,
                  "cascade": [{"name": "apgd-ce", "accuracy_after": 0.5, "seconds": 1.0}]}
            if autoattack_flags:
                aa["robust_flags"] = [int(v) for v in pgd]
            folder = comp / f"s{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            if seed == 0:
                for sub, obj in (("evaluate", ev), ("robustness", rb)):
                    (study / sub).mkdir(parents=True, exist_ok=True)
                    (study / sub / f"{name}.json").write_text(json.dumps(obj))
            else:
                (folder / f"evaluate_{name}.json").write_text(json.dumps(ev))
                (folder / f"robustness_{name}.json").write_text(json.dumps(rb))
            (folder / f"autoattack_{name}.json").write_text(json.dumps(aa))
    (study / "evaluate" / "dnn.json").write_text(json.dumps(evaluate_record(None, "natural", 0.98, 0.0)))


def test_the_comparison_pools_the_seeds_and_never_says_tie(tmp_path, monkeypatch):
    from stages import render_comparison

    # the comparison params file's schema is not under test here
    monkeypatch.setattr(render_comparison, "load_comparison",
                        lambda path, dataset, scale: SimpleNamespace(seed_offsets=[1, 2], autoattack_subset=100,
                                                                        autoattack_steps=100, autoattack_square_queries=5000))
    comparison_metrics(tmp_path / "study", tmp_path / "comp", {0: (1, 5), 1: (0, 5), 2: (0, 5)})
    (tmp_path / "c.yaml").write_text("{}")
    result = CliRunner().invoke(render_comparison.main, [
        "--dataset", "mnist", "--loss", "ce_mse", "--source", "dnn", "--study-dir", str(tmp_path / "study"),
        "--dir", str(tmp_path / "comp"), "--out", str(tmp_path / "report.md"), "--summary",
        str(tmp_path / "summary.json"), "--params", str(ROOT / "params.yaml"), "--comparison", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    assert not TIE.search(text)
    # no seed alone separates them (1 vs 5, 0 vs 5, 0 vs 5), the pooled 1 vs 15 does
    assert ("- PGD: Madry (dnn_adv) better (p = 0.0005; 15 vs 1 discordant) over 3 seeds "
            "[seed 0: 5 vs 1, seed 1: 5 vs 0, seed 2: 5 vs 0]") in text
    assert "- AutoAttack: Madry (dnn_adv) better (p = 0.0005; 15 vs 1 discordant) over 3 seeds" in text
    assert "- natural: inconclusive (p = 1; 0 vs 0 discordant) over 3 seeds" in text
    assert "- suite worst case: no per-example flags: not compared (seed 0, seed 1, seed 2)" in text
    summ = json.loads((tmp_path / "summary.json").read_text())["mnist"]
    assert summ["pgd"]["outcome"] == "better" and (summ["pgd"]["aaa_only"], summ["pgd"]["madry_only"]) == (1, 15)
    assert summ["pgd"]["p"] == pytest.approx(binomial_two_sided(1, 16))


def test_the_blackbox_report_pairs_each_blind_ae_with_the_white_box_one(tmp_path):
    from stages.render_blackbox import ACCESS, main

    ref, blind = paired_flags(15, 1, both=60, neither=24)
    ones = [i for i, f in enumerate(blind) if f == "1"][:15]
    blind_worse = "".join("0" if i in ones else f for i, f in enumerate(blind))   # 15 fewer right than `blind`
    attacks = [{"name": n, "kind": "white-box", "accuracy": 0.5, "settings": {"steps": s}}
               for n, s in (("pgd40-paper", 40), ("pgd200-paper", 200))]
    naturals = {"gradient": 0.9, "scores": 0.85, "labels": 0.3}
    flag_sets = {"gradient": ref, "scores": blind, "labels": blind}
    for fit in ("labels", "scores"):
        (tmp_path / f"surrogate_{fit}.json").write_text(json.dumps({
            "arch": "dnn", "queries": 110, "seconds": 1.0, "test_agreement_with_blackbox": 0.97,
            "input_gradient_cosine": {"mean": 0.8, "examples": 1000}}))
    for access in ACCESS:
        queries = 3000 if access == "scores" else (0 if access == "labels" else None)
        train = {"loss": "ce_mse", "classifier": "models/mnist/dnn.pt", "n_train": 100,
                 "natural_test_accuracy": naturals[access], "train": {"batch_size": 64},
                 "attack": {"steps": 10, "eps": 0.3, "alpha": 0.04},
                 "blackbox": {"epochs": 2, "epoch_images": 50, "eps_ramp": 5, "warm_epochs": 1, "estimate_images": 8,
                              "surrogate_weight": 0.5, "smoothing": 0.01, "output": "logits", "surrogate": "dnn"},
                 "queries": {"ae_training": queries, "per_training_image": queries and queries / 100,
                             "training_images": 100, "per_estimated_image": 128 if queries else 0},
                 "ae_training_seconds": 3.0}
        flags = flag_sets[access]
        suite = {"name": access, "examples": 100, "seed": 0, "attacks": attacks,
                 "worst_case_accuracy": flags.count("1") / 100, "worst_case_flags": flags,
                 "subset": {"n": 100, "seed": 0, "indices_sha256": "s"},
                 "masked_gradients": {"detected": False, "acknowledged": False}}
        (tmp_path / f"train_{access}.json").write_text(json.dumps(train))
        (tmp_path / "robustness").mkdir(exist_ok=True)
        (tmp_path / "robustness" / f"{access}.json").write_text(json.dumps(suite))
    (tmp_path / "dnn.json").write_text(json.dumps({"natural_accuracy_full_test": 0.98}))
    result = CliRunner().invoke(main, ["--dataset", "mnist", "--metrics-dir", str(tmp_path), "--out",
                                       str(tmp_path / "out.md"), "--classifier-metrics", str(tmp_path / "dnn.json")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out.md").read_text()
    assert not TIE.search(text)
    assert ("- label-trained AE against the white-box AE: not compared: label-trained AE collapsed: natural "
            "30.0% vs classifier alone 98.0%") in text
    assert "- score-trained AE against the white-box AE: white-box AE better (p = 0.0005; 15 vs 1 discordant)" in text
    assert ("- score-trained AE against the label-trained AE: not compared: label-trained AE collapsed: natural "
            "30.0% vs classifier alone 98.0%") in text
    assert "[collapsed: natural 30.0% vs classifier alone 98.0%] |" in text
    # the scores against the labels, paired: score-trained right where the label-trained AE fails
    train = json.loads((tmp_path / "train_labels.json").read_text())
    (tmp_path / "train_labels.json").write_text(json.dumps({**train, "natural_test_accuracy": 0.88}))
    suite = json.loads((tmp_path / "robustness" / "labels.json").read_text())
    (tmp_path / "robustness" / "labels.json").write_text(json.dumps(
        {**suite, "worst_case_flags": blind_worse, "worst_case_accuracy": blind_worse.count("1") / 100}))
    result = CliRunner().invoke(main, ["--dataset", "mnist", "--metrics-dir", str(tmp_path), "--out",
                                       str(tmp_path / "out.md"), "--classifier-metrics", str(tmp_path / "dnn.json")])
    text = (tmp_path / "out.md").read_text()
    assert "- score-trained AE against the label-trained AE: score-trained AE better (p = " in text


def test_the_summary_marks_collapse_and_adds_the_paired_headline(tmp_path):
    from aaa_core.reporting.summary import aaa_vs_madry_table, summarize

    aaa_flags, madry_flags = paired_flags(1, 15, both=60, neither=24)
    (tmp_path / "evaluate").mkdir()
    records = {"dnn": evaluate_record(None, "natural", 0.98, 0.0),
               "dnn_adv": evaluate_record(None, "adversarial", 0.97, 0.75, madry_flags),
               "ae_ce_mse-dnn": evaluate_record("ce_mse", "natural", 0.97, 0.61, aaa_flags),
               "ae_ce-dnn": evaluate_record("ce", "natural", 0.30, 0.20, aaa_flags)}
    for name, m in records.items():
        (tmp_path / "evaluate" / f"{name}.json").write_text(json.dumps(m))
    summary = summarize(tmp_path, "ce_mse", "dnn")
    head = summary["_headline"]
    assert (head["pgd_aaa_only"], head["pgd_madry_only"]) == (1, 15)
    assert head["pgd_p"] == round(binomial_two_sided(1, 16), 4) and "aaa_collapsed" not in head
    assert summary["ae_ce-dnn"]["collapsed"] is True and "collapsed" not in summary["ae_ce_mse-dnn"]
    assert [r["pipeline"] for r in aaa_vs_madry_table(summary, "dnn", "ce_mse")] == \
        ["dnn", "dnn_adv", "ae_ce_mse-dnn", "ae_ce-dnn (collapsed)"]
    assert "aaa_collapsed" in summarize(tmp_path, "ce", "dnn")["_headline"]
