"""stages.summarize: the headline metrics file and the DVC plot tables, checked against the metrics they come from.

The metrics are written here into a temporary folder, in the layout and format the stages write (evaluate,
ensemble, robustness, knn, train, sweep_eps.json; per-example flags and example-set records included), so the
tests depend on no committed metrics file that a rebuild replaces, and every expected number is read from the
source file here, never from the code under test. The set mirrors the study's MNIST outputs: the suite ran on
dnn, dnn_adv and the headline AE ae_ce_mse-dnn; ae_mse-dnn stands for an AE of ``other_losses`` (evaluated, no
suite run).
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from aaa_core.reporting.summary import headline_pairs, load_all
from aaa_core.stats import exact_two_sided_p
from stages.summarize import main

N = 300                                   # examples of every record: accuracies like 0.8533 that need rounding
SUBSET = {"n": N, "seed": 0, "order": "aaa_core.data.test_order", "indices_sha256": "f" * 64}
CLASSIFIER = {"dnn": "models/mnist/dnn.pt", "dnn_adv": "models/mnist/dnn_adv.pt"}
# pipeline: (classifier, AE loss or None, natural, PGD-40, PGD-200 correct counts of N)
EVALUATED = {"dnn": ("dnn", None, 294, 3, 0), "dnn_adv": ("dnn_adv", None, 289, 241, 233),
             "ae_ce_mse-dnn": ("dnn", "ce_mse", 287, 221, 206), "ae_mse-dnn": ("dnn", "mse", 290, 40, 31),
             "ae_ensemble-dnn": ("dnn", "ce_mse", 283, 199, 190)}
WORST = {"dnn": 0, "dnn_adv": 226, "ae_ce_mse-dnn": 200}   # the suite's worst case, correct of N
FILES = ["evaluate/dnn.json", "evaluate/dnn_adv.json", "evaluate/ae_ce_mse-dnn.json", "evaluate/ae_mse-dnn.json",
         "robustness/dnn.json", "robustness/dnn_adv.json", "robustness/ae_ce_mse-dnn.json",   # none for ae_mse-dnn
         "ensemble/ae_ensemble-dnn.json", "knn/ae_ce_mse-dnn.json", "train/dnn.json", "train/ae_ce_mse.json",
         "sweep_eps.json"]


def flags(correct: int, seed: str) -> str:
    """N per-example flags with ``correct`` ones, in an order fixed by ``seed``."""
    bits = ["1"] * correct + ["0"] * (N - correct)
    random.Random(seed).shuffle(bits)
    return "".join(bits)


def pipeline(name: str) -> dict:
    clf, loss, *_ = EVALUATED[name]
    return {"ae": f"models/mnist/ae_{loss}.pt" if loss else None, "ae_loss": loss, "classifier": CLASSIFIER[clf],
            "classifier_arch": "dnn", "classifier_mode": "adversarial" if clf == "dnn_adv" else "natural"}


def evaluate_record(name: str) -> dict:
    _, _, natural, pgd40, pgd200 = EVALUATED[name]
    return {"dataset": "mnist", "pipeline": pipeline(name), "natural_accuracy_full_test": (natural + 3) / (N + 3),
            "natural_accuracy": natural / N, "robust_accuracy": {"pgd40": pgd40 / N, "pgd200": pgd200 / N},
            "natural_flags": flags(natural, f"{name}/natural"),
            "robust_flags": {"pgd40": flags(pgd40, f"{name}/pgd40"), "pgd200": flags(pgd200, f"{name}/pgd200")},
            "attack": {"eps": 0.3, "alpha": 0.01, "steps": 200, "examples": N, "seed": 1}, "examples": SUBSET}


def robustness_record(name: str) -> dict:
    spec = (f"models/mnist/ae_{pipeline(name)['ae_loss']}.pt+" if pipeline(name)["ae"] else "") + pipeline(name)["classifier"]
    return {"dataset": "mnist", "name": name, "pipeline": {"spec": spec, "ae_loss": pipeline(name)["ae_loss"]},
            "examples": N, "subset": SUBSET, "seed": 0, "natural_accuracy": EVALUATED[name][2] / N,
            "worst_case_accuracy": WORST[name] / N, "worst_case_flags": flags(WORST[name], f"{name}/worst")}


def knn_record() -> dict:
    curves = {"non_adaptive": (0.8733333, 0.8466667), "bpda": (0.8866667, 0.86), "worst_case": (0.8466667, 0.8133333)}
    return {"dataset": "mnist", "pipeline": pipeline("ae_ce_mse-dnn"), "natural_accuracy": 0.9433333,
            "robust_accuracy": {k: {"pgd40": a, "pgd200": b} for k, (a, b) in curves.items()}, "examples": SUBSET}


def train_record(losses: list[float]) -> dict:
    return {"history": [{"epoch": i + 1, "loss": loss, "val_loss": loss * 1.1 + 0.012345, "lr": 0.001}
                        for i, loss in enumerate(losses)]}


def sweep_record() -> dict:
    eps = [0.0, 0.1, 0.2, 0.3]
    curves = {"ae_ce_mse + dnn": [0.9566667, 0.8812345, 0.7712345, 0.6866667],
              "dnn (natural)": [0.98, 0.3012345, 0.0123456, 0.0],
              "dnn (adversarial)": [0.9633333, 0.9012345, 0.8412345, 0.7766667]}
    return {"dataset": "mnist", "headline_loss": "ce_mse", "examples": 100, "seed": 0,
            "curves": {label: [{"eps": e, "alpha": 2.5 * e / 20, "accuracy": a} for e, a in zip(eps, accs)]
                       for label, accs in curves.items()}}


def record(name: str) -> dict:
    """The metrics file ``name`` (relative to metrics/mnist) as its stage writes it."""
    folder, _, stem = name.removesuffix(".json").rpartition("/")
    if folder in ("evaluate", "ensemble"):
        return evaluate_record(stem)
    if folder == "robustness":
        return robustness_record(stem)
    if folder == "knn":
        return knn_record()
    if folder == "train":
        return train_record({"dnn": [0.412345, 0.151234, 0.0912345], "ae_ce_mse": [1.812345, 0.912345]}[stem])
    return sweep_record()


def write_metrics(dest: Path, files: list[str]) -> Path:
    """Write the metrics files ``files`` (paths under metrics/mnist) into ``dest``."""
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(json.dumps(record(name), indent=2))
    return dest


def paired(metrics: Path, aaa: str, madry: str, key: str | None = None) -> tuple[int, int]:
    """(examples only AAA gets right, only Madry does) from two source files' flags: ``robust_flags[key]``, or
    ``worst_case_flags`` without a key."""
    a, m = ((source(metrics, f)["robust_flags"][key] if key else source(metrics, f)["worst_case_flags"])
            for f in (aaa, madry))
    return sum(x == "1" and y == "0" for x, y in zip(a, m)), sum(x == "0" and y == "1" for x, y in zip(a, m))


def source(metrics: Path, name: str) -> dict:
    return json.loads((metrics / name).read_text())


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run(metrics: Path, out: Path, *extra: str, dataset: str = "mnist"):
    return CliRunner().invoke(main, ["--dataset", dataset, "--metrics-dir", str(metrics), "--summary",
                                     str(out / "summary.json"), "--plots-dir", str(out / "plots"), *extra])


@pytest.fixture
def summarized(tmp_path) -> tuple[Path, Path, dict]:
    metrics = write_metrics(tmp_path / "metrics", FILES)
    out = tmp_path / "out"
    result = run(metrics, out)
    assert result.exit_code == 0, result.output
    return metrics, out, json.loads((out / "summary.json").read_text())["mnist"]


def test_rows_are_the_source_numbers(summarized):
    metrics, _, summary = summarized
    evaluated = sorted(p.stem for p in (metrics / "evaluate").glob("*.json"))
    assert [k for k in summary if k not in ("_headline", "ensemble", "knn")] == evaluated
    for name in evaluated:
        m = source(metrics, f"evaluate/{name}.json")
        last = max(m["robust_accuracy"], key=lambda k: int(k.removeprefix("pgd")))
        assert last == "pgd200"   # of pgd40 and pgd200: the largest step count, not the last string
        assert summary[name]["natural"] == round(m["natural_accuracy"], 4)
        assert summary[name]["pgd200"] == round(m["robust_accuracy"]["pgd200"], 4)
    for name in ("dnn", "dnn_adv", "ae_ce_mse-dnn"):
        assert summary[name]["worst"] == round(source(metrics, f"robustness/{name}.json")["worst_case_accuracy"], 4)
        assert set(summary[name]) == {"natural", "pgd200", "worst"}   # none collapsed: no "collapsed" key
    for name in ("ae_mse-dnn",):   # no adaptive-suite file (an AE of other_losses): no worst case
        assert set(summary[name]) == {"natural", "pgd200"}
    ens = source(metrics, "ensemble/ae_ensemble-dnn.json")
    assert summary["ensemble"] == {"ae_ensemble-dnn": {"natural": round(ens["natural_accuracy"], 4),
                                                       "pgd200": round(ens["robust_accuracy"]["pgd200"], 4)}}
    knn = source(metrics, "knn/ae_ce_mse-dnn.json")
    assert summary["knn"] == {"ae_ce_mse-dnn": {"natural": round(knn["natural_accuracy"], 4),
                                                "worst": round(knn["robust_accuracy"]["worst_case"]["pgd200"], 4)}}


def test_headline_first_and_compares_aaa_with_madry(summarized):
    metrics, out, summary = summarized
    text = (out / "summary.json").read_text()
    assert list(summary)[0] == "_headline"
    assert text.index('"_headline"') < text.index('"dnn"')
    assert sorted(summary)[0] == "_headline"   # dvc metrics show/diff sort the keys
    aaa, madry = (source(metrics, f"evaluate/{n}.json")["robust_accuracy"]["pgd200"] for n in ("ae_ce_mse-dnn",
                                                                                               "dnn_adv"))
    # the paired test of AAA against Madry: the discordant counts of the two source files' flags
    pgd = paired(metrics, "evaluate/ae_ce_mse-dnn.json", "evaluate/dnn_adv.json", "pgd200")
    worst = paired(metrics, "robustness/ae_ce_mse-dnn.json", "robustness/dnn_adv.json")
    assert summary["_headline"] == {
        "aaa": "ae_ce_mse-dnn", "madry": "dnn_adv", "aaa_pgd": round(aaa, 4), "madry_pgd": round(madry, 4),
        "aaa_worst": round(source(metrics, "robustness/ae_ce_mse-dnn.json")["worst_case_accuracy"], 4),
        "madry_worst": round(source(metrics, "robustness/dnn_adv.json")["worst_case_accuracy"], 4),
        "pgd_p": round(exact_two_sided_p(pgd[0], sum(pgd)), 4), "pgd_aaa_only": pgd[0], "pgd_madry_only": pgd[1],
        "worst_p": round(exact_two_sided_p(worst[0], sum(worst)), 4), "worst_aaa_only": worst[0],
        "worst_madry_only": worst[1]}
    assert sum(pgd) > 0 and sum(worst) > 0   # the flags differ: the counts are not trivially zero
    assert len(text.splitlines()) < 60


def test_the_readme_reads_the_headline_pairs_the_summary_records(summarized):
    """stages.render_readme's rows are ``headline_pairs``: the source files' accuracies and counts, and the
    discordant counts that the summary's ``_headline`` records."""
    metrics, _, summary = summarized
    pairs = headline_pairs(load_all(metrics), "ce_mse", "dnn")
    assert {k: p.label for k, p in pairs.items()} == {"pgd": "PGD-200", "worst": "suite worst case"}
    assert pairs["pgd"].aaa.accuracy == source(metrics, "evaluate/ae_ce_mse-dnn.json")["robust_accuracy"]["pgd200"]
    assert pairs["worst"].madry.accuracy == source(metrics, "robustness/dnn_adv.json")["worst_case_accuracy"]
    head = summary["_headline"]
    for measure, pair in pairs.items():
        assert (pair.aaa.name, pair.madry.name, pair.aaa.n, pair.madry.n) == ("AAA", "Madry", N, N)
        assert (pair.verdict.counts.first_only, pair.verdict.counts.second_only) == \
            (head[f"{measure}_aaa_only"], head[f"{measure}_madry_only"])


def test_headline_loss_option_and_missing_worst(tmp_path):
    metrics = write_metrics(tmp_path / "metrics", FILES)
    result = run(metrics, tmp_path / "out", "--loss", "mse")
    assert result.exit_code == 0, result.output
    head = json.loads((tmp_path / "out" / "summary.json").read_text())["mnist"]["_headline"]
    assert head["aaa"] == "ae_mse-dnn"
    assert head["aaa_pgd"] == round(source(metrics, "evaluate/ae_mse-dnn.json")["robust_accuracy"]["pgd200"], 4)
    assert "aaa_worst" not in head and "madry_worst" in head
    # the PGD flags pair; the worst case does not (no suite file for ae_mse-dnn)
    assert (head["pgd_aaa_only"], head["pgd_madry_only"]) == paired(metrics, "evaluate/ae_mse-dnn.json",
                                                                    "evaluate/dnn_adv.json", "pgd200")
    assert not any(k.startswith("worst_") for k in head)
    assert list(read_csv(tmp_path / "out" / "plots" / "eps.csv")[0]) == ["eps", "aaa", "natural", "madry"]
    bars = read_csv(tmp_path / "out" / "plots" / "aaa_vs_madry.csv")
    assert [r["pipeline"] for r in bars] == ["dnn", "dnn_adv", "ae_mse-dnn", "ae_ce_mse-dnn", "ae_ensemble-dnn"]


def test_plot_tables(summarized):
    metrics, out, _ = summarized
    plots = out / "plots"
    assert sorted(p.name for p in (plots / "training").iterdir()) == ["ae_ce_mse.csv", "dnn.csv"]
    history = source(metrics, "train/dnn.json")["history"]
    rows = read_csv(plots / "training" / "dnn.csv")
    assert [int(r["epoch"]) for r in rows] == [h["epoch"] for h in history]
    assert [float(r["loss"]) for r in rows] == [round(h["loss"], 4) for h in history]
    assert [float(r["val_loss"]) for r in rows] == [round(h["val_loss"], 4) for h in history]

    sweep = source(metrics, "sweep_eps.json")
    rows = read_csv(plots / "eps.csv")
    assert list(rows[0]) == ["eps", "aaa", "natural", "madry"]
    for column, label in (("aaa", "ae_ce_mse + dnn"), ("natural", "dnn (natural)"), ("madry", "dnn (adversarial)")):
        curve = sweep["curves"][label]
        assert [(float(r["eps"]), float(r[column])) for r in rows] == [(p["eps"], round(p["accuracy"], 4))
                                                                       for p in curve]

    rows = read_csv(plots / "aaa_vs_madry.csv")
    assert [r["pipeline"] for r in rows] == ["dnn", "dnn_adv", "ae_ce_mse-dnn", "ae_mse-dnn", "ae_ensemble-dnn"]
    by_name = {r["pipeline"]: r for r in rows}
    adv = source(metrics, "evaluate/dnn_adv.json")
    assert float(by_name["dnn_adv"]["pgd"]) == round(adv["robust_accuracy"]["pgd200"], 4)
    assert float(by_name["dnn_adv"]["natural"]) == round(adv["natural_accuracy"], 4)
    assert float(by_name["dnn_adv"]["worst"]) == round(source(metrics, "robustness/dnn_adv.json")
                                                       ["worst_case_accuracy"], 4)
    assert by_name["ae_mse-dnn"]["worst"] == "" and by_name["ae_ensemble-dnn"]["worst"] == ""


def test_partial_dag_writes_rows_for_what_exists(tmp_path):
    metrics = write_metrics(tmp_path / "metrics", ["evaluate/dnn.json"])
    out = tmp_path / "out"
    (out / "plots" / "training").mkdir(parents=True)
    (out / "plots" / "training" / "gone.csv").write_text("epoch,loss,val_loss\n1,2,3\n")   # from an older run
    result = run(metrics, out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())["mnist"]
    assert list(summary) == ["_headline", "dnn"]
    assert summary["_headline"] == {"aaa": "ae_ce_mse-dnn", "madry": "dnn_adv"}
    assert list((out / "plots" / "training").iterdir()) == []
    assert (out / "plots" / "eps.csv").read_text() == "eps,aaa,natural,madry\n"
    assert [r["pipeline"] for r in read_csv(out / "plots" / "aaa_vs_madry.csv")] == ["dnn"]


def test_cifar_step_key_and_source(tmp_path):
    metrics = tmp_path / "metrics"
    (metrics / "evaluate").mkdir(parents=True)
    for name, nat, pgd in (("resnet", 0.6, 0.0), ("resnet_adv", 0.34, 0.21), ("ae_ce_mse-resnet", 0.23, 0.13456)):
        (metrics / "evaluate" / f"{name}.json").write_text(json.dumps(
            {"natural_accuracy": nat, "robust_accuracy": {"pgd20": pgd}}))
    result = run(metrics, tmp_path / "out", dataset="cifar10")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["cifar10"]
    assert summary["ae_ce_mse-resnet"] == {"natural": 0.23, "pgd20": 0.1346}
    assert summary["_headline"] == {"aaa": "ae_ce_mse-resnet", "madry": "resnet_adv", "aaa_pgd": 0.1346,
                                    "madry_pgd": 0.21}


def test_no_evaluate_files_is_one_clear_error(tmp_path):
    metrics = write_metrics(tmp_path / "metrics", ["train/dnn.json", "sweep_eps.json"])
    out = tmp_path / "out"
    result = run(metrics, out)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(metrics / "evaluate") in lines[0], result.output
    assert not (out / "summary.json").exists()
    assert run(tmp_path / "absent", out).exit_code == 1
