"""Tables: small models carry their arguments in their name; the paper's numbers are matched to the right column."""
from aaa_core.reporting.tables import caption, model_name, paper_value, table
from stages.render_tables import TABLES, paper_entry


def record(arch, mode="natural", loss=None, kwargs=None, natural=0.5, robust=0.25):
    return {"pipeline": {"classifier_arch": arch, "classifier_kwargs": kwargs or {}, "classifier_mode": mode,
                         "ae_loss": loss, "ae": f"models/ae_{loss}.pt" if loss else None},
            "natural_accuracy": natural, "robust_accuracy": {"pgd20": robust}, "attack": {"examples": 100}}


def test_a_smaller_model_is_never_shown_under_the_papers_name():
    assert model_name("resnet") == "RESNET"
    assert model_name("resnet", {"widen": 1, "units": 2}) == "RESNET(widen=1, units=2)"


def test_a_caption_names_the_smaller_models_as_the_tables_do():
    rows = [record("resnet", kwargs={"widen": 1, "units": 2}), record("resnet", loss="ce", kwargs={"widen": 1, "units": 2})]
    rows[1]["pipeline"]["ae_kwargs"] = {"width": 0.125}
    for m in rows:
        m.update(label="CIFAR-10", data_source="test", attack={"examples": 8, "eps": 8 / 255, "alpha": 2 / 255,
                                                             "restarts": 1, "seed": 0})
    assert caption(rows, "cpu").endswith(" Model arguments: AE(width=0.125); RESNET(widen=1, units=2).")


def test_paper_value_falls_back_to_the_one_pgd_column_only_where_the_step_count_is_illegible():
    assert paper_value({"pgd40": 1.0, "pgd200": 2.0}, 200) == 2.0
    assert paper_value({"pgd": 47.79}, 20) == 47.79
    assert paper_value({"pgd40": 1.0}, 20) is None


def test_cifar_tables_read_the_papers_nested_transfer_entries():
    paper = {"table7_transfer": {"vgg19": {"natural_training": {"natural": 91.47, "pgd": 1.49},
                                           "aaa_mse": {"natural": 87.78, "pgd": 2.70}}}}
    _, tables = TABLES["cifar10"]
    key = next(k for _, arch, k in tables if arch == "vgg19")
    rows = [record("vgg19", kwargs={"width_divisor": 8}), record("vgg19", loss="mse", natural=0.8, robust=0.1),
            record("dnn", loss="mse")]
    df = table(rows, paper_entry(paper, key), "mse", "vgg19", [20])
    assert list(df["Model"]) == ["Natural training", "AAA, L_mse (headline)"]
    assert list(df["Natural (paper)"]) == ["91.47", "87.78"] and list(df["PGD-20 (paper)"]) == ["1.49", "2.70"]
    # each of our accuracies with its 95% Wilson interval over the 100 examples
    assert list(df["PGD-20 (ours)"]) == ["25.00 [17.5, 34.3]", "10.00 [5.5, 17.4]"]


def test_a_degenerate_pipeline_is_flagged_in_its_row():
    collapsed = record("dnn", loss="ce", natural=0.1, robust=0.1)
    collapsed["sanity"] = {"constant_output": {"class": 2, "share": 1.0, "label_share": 0.1}}
    df = table([record("dnn"), collapsed], {}, "ce", "dnn", [20])
    assert list(df["Model"]) == ["Natural training", "AAA, L_ce (headline) [DEGENERATE: class 2 for 100% of inputs]"]


def flags(correct, n=100, start=0):
    """Per-example flags: examples start .. start + correct - 1 right, the rest wrong."""
    return "".join("1" if start <= i < start + correct else "0" for i in range(n))


def test_the_worst_case_verdict_is_the_paired_test_never_a_tie():
    from aaa_core.reporting.tables import verdict

    def suite(mode, loss, worst, flag_text=None, n=100):
        m = record("dnn", mode=mode, loss=loss)
        m = {**m, "worst_case_accuracy": worst, "examples": n}
        if flag_text is not None:
            m.update(worst_case_flags=flag_text, subset={"n": n, "seed": 0, "indices_sha256": "s"})
        return m

    # 89% against 80% on 100 examples, the intervals overlap (once called a tie): 9 vs 0 discordant separates them
    madry = suite("adversarial", None, 0.89, flags(89))
    text = verdict([madry, suite("natural", "ce_mse", 0.80, flags(80))])
    assert "Madry better (p = 0.0039; 9 vs 0 discordant)" in text and "tie" not in text
    # the same accuracies, the discordant examples spread both ways (AAA right on 11 Madry misses): inconclusive
    text = verdict([madry, suite("natural", "ce_mse", 0.80, flags(80, start=20))])
    assert "inconclusive (p = 0.15; 11 vs 20 discordant)" in text
    assert "AAA better" in verdict([suite("adversarial", None, 0.60, flags(60)),
                                    suite("natural", "ce_mse", 0.89, flags(89))])
    # metrics from before the flags: said, not invented
    assert "no per-example flags: not compared" in verdict([suite("adversarial", None, 0.89),
                                                            suite("natural", "ce_mse", 0.60)])


def test_wilson_interval_matches_the_textbook_values():
    from aaa_core.stats import wilson_interval

    lo, hi = wilson_interval(77, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.6785, 0.8416)
    assert wilson_interval(0, 100)[0] == 0.0 and wilson_interval(100, 100)[1] == 1.0
    assert wilson_interval(0, 100)[1] > 0.03     # zero observed failures is not a zero rate


def suite_record(spec, worst, n=100):
    return {"pipeline": {"spec": spec}, "worst_case_accuracy": worst, "examples": n, "seed": 0,
            "attacks": [{"name": "pgd200-paper"}, {"name": "square"}]}


def test_the_worst_case_column_comes_from_the_suite_run_on_that_very_pipeline():
    from aaa_core.reporting.tables import WORST, suite_by_pipeline

    natural, aaa = record("dnn", natural=0.98, robust=0.0), record("dnn", loss="ce_mse", natural=0.97, robust=0.77)
    natural["pipeline"]["classifier"] = aaa["pipeline"]["classifier"] = "models/dnn.pt"
    other_ae = record("dnn", loss="mse")
    other_ae["pipeline"]["classifier"] = "models/dnn.pt"
    suite = suite_by_pipeline([suite_record("models/ae_ce_mse.pt+models/dnn.pt", 0.75),
                               suite_record("models/dnn.pt", 0.0),
                               suite_record("models/ae_ce_mse.pt+models/fc.pt", 0.11)])   # same AE, other classifier
    df = table([natural, aaa, other_ae], {}, "ce_mse", "dnn", [20], suite)
    assert list(df[WORST]) == ["0.00 [0.0, 3.7]", "75.00 [65.7, 82.5]", "not run"]
    assert WORST not in table([aaa], {}, "ce_mse", "dnn", [20]).columns   # no suite given: no column


def test_the_verdict_under_a_table_against_madry_pairs_pgd_and_the_worst_case():
    from aaa_core.reporting.tables import suite_by_pipeline, versus_madry

    madry = record("dnn", mode="adversarial", robust=0.89)
    aaa = record("dnn", loss="ce_mse", robust=0.77)
    madry["pipeline"]["classifier"], aaa["pipeline"]["classifier"] = "models/dnn_adv.pt", "models/dnn.pt"
    madry["attack"] = aaa["attack"] = {"examples": 500}
    madry["examples"] = aaa["examples"] = {"n": 500, "seed": 0, "indices_sha256": "first"}
    madry["robust_accuracy"], aaa["robust_accuracy"] = {"pgd200": 0.89}, {"pgd200": 0.77}
    madry["robust_flags"], aaa["robust_flags"] = {"pgd200": flags(445, 500)}, {"pgd200": flags(385, 500)}
    sub = {"n": 100, "seed": 0, "indices_sha256": "suite"}
    suite = suite_by_pipeline([{**suite_record("models/dnn_adv.pt", 0.86), "worst_case_flags": flags(86), "subset": sub},
                               {**suite_record("models/ae_ce_mse.pt+models/dnn.pt", 0.80),
                                "worst_case_flags": flags(80, start=14), "subset": sub}])
    text = versus_madry([madry, aaa], suite, "ce_mse", "dnn", [40, 200])
    assert "under PGD-200, AAA 77.00" in text and "Madry 89.00" in text
    pgd, worst = text.split(":** ")[1].split(". Verdicts")[0].split("; under")
    assert pgd.endswith("Madry better (p = 2e-18; 60 vs 0 discordant)")
    assert worst.startswith(" the suite's worst case") and "inconclusive (p = 0.29; 8 vs 14 discordant)" in worst
    assert "tie" not in text
    # no suite record for the Madry model: no worst-case verdict, said so
    assert "no worst-case verdict" in versus_madry([madry, aaa], {}, "ce_mse", "dnn", [200])
    # AAA ahead: a verdict for AAA
    aaa["robust_accuracy"], aaa["robust_flags"] = {"pgd200": 0.99}, {"pgd200": flags(495, 500)}
    assert "AAA better" in versus_madry([madry, aaa], suite, "ce_mse", "dnn", [200]).split("; under")[0]


def test_knn_and_the_plain_ae_are_compared_on_the_same_examples_with_a_verdict():
    from aaa_core.reporting.tables import knn_versus_plain

    def knn_record(loss, plain, knn, worst=None, n=150):
        m = record("dnn", loss=loss)
        m["attack"] = {"examples": n}
        m["natural_accuracy"], m["plain_ae_natural_accuracy"] = 0.98, 0.99
        m["robust_accuracy"] = {"non_adaptive": {"pgd200": knn}, "bpda": {"pgd200": knn},
                                "worst_case": {"pgd200": knn if worst is None else worst},
                                "plain_ae_same_examples": {"pgd200": plain}}
        return m

    def with_flags(m, plain, worst):
        m["flags"] = {"plain_ae_same_examples": {"pgd200": flags(round(150 * plain), 150)},
                      "worst_case": {"pgd200": flags(round(150 * worst), 150)}}
        return m

    rows = [with_flags(knn_record("ce_mse", 0.70, 0.90), 0.70, 0.90), with_flags(knn_record("mse", 0.85, 0.87), 0.85, 0.87),
            with_flags(knn_record("ce", 0.90, 0.60), 0.90, 0.60),
            with_flags(knn_record("ce_mse", 0.70, 0.90, worst=0.72), 0.70, 0.72)]
    df = knn_versus_plain(rows, "ce_mse", "dnn", [200])
    assert list(df["Model"]) == ["AAA, L_ce+mse", "AAA, L_ce+mse", "AAA, L_ce", "AAA, L_mse"]
    # the verdict reads kNN's worst case: kNN on the same examples at 90% but an adaptive attack at 72% is not shown
    # better than the plain AE (3 vs 0 discordant); never a tie
    assert list(df["PGD-200 verdict"]) == ["kNN better (p = 2e-09; 30 vs 0 discordant)",
                                           "inconclusive (p = 0.25; 3 vs 0 discordant)",
                                           "plain AE better (p = 6e-14; 45 vs 0 discordant)",
                                           "inconclusive (p = 0.50; 2 vs 0 discordant)"]
    del rows[0]["flags"]   # a record from before the flags: no verdict, said so
    assert list(knn_versus_plain(rows, "ce_mse", "dnn", [200])["PGD-200 verdict"])[0] == \
        "no per-example flags: not compared"
    assert list(df["PGD-200, plain AE"])[0] == "70.00 [62.2, 76.8]"
    assert list(df["PGD-200, + kNN, same examples"])[1] == "90.00 [84.2, 93.8]"
    old = record("dnn", loss="ce")   # a record from before the plain-AE measurement: left out, not invented
    old["robust_accuracy"] = {"non_adaptive": {"pgd200": 0.5}}
    assert len(knn_versus_plain([old], "ce", "dnn", [200])) == 0


def test_the_knn_caption_counts_square_only_examples_at_the_longest_pgd():
    from stages.render_tables import knn_square_caption

    def row(loss, counts, square=True):
        return {"pipeline": {"ae_loss": loss, "classifier_arch": "dnn"}, "square_only_fooled": counts,
                "attack": {"square": {"queries": 1000, "p_init": 0.8, "library": "torchattacks 3.5.1"}} if square
                else {}}

    caption = knn_square_caption([row("mse", {"pgd40": 12, "pgd200": 5}), row("ce", {"pgd40": 0, "pgd200": 0})])
    assert "1000 queries" in caption and "mse-dnn 5." in caption and "ce-dnn" not in caption
    assert "none on any pipeline" in knn_square_caption([row("ce", {"pgd40": 3, "pgd200": 0})])
    assert "No query-only attack" in knn_square_caption([row("ce", {}, square=False)])
