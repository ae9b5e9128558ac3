"""stages.summarize: the headline metrics file and the DVC plot tables, checked against the metrics they come from.

The metrics are a few of the committed files of metrics/mnist copied into a temporary folder, so every expected
number is read from the source file here, never from the code under test.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from stages.summarize import main

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "metrics" / "mnist"
FILES = ["evaluate/dnn.json", "evaluate/dnn_adv.json", "evaluate/ae_ce_mse-dnn.json", "evaluate/ae_mse-dnn.json",
         "robustness/dnn_adv.json", "robustness/ae_ce_mse-dnn.json",   # none for dnn and ae_mse-dnn
         "ensemble/ae_ensemble-dnn.json", "knn/ae_ce_mse-dnn.json", "train/dnn.json", "train/ae_ce_mse.json",
         "sweep_eps.json"]


def copy_metrics(dest: Path, files: list[str]) -> Path:
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MNIST / name, dest / name)
    return dest


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
    metrics = copy_metrics(tmp_path / "metrics", FILES)
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
    for name in ("dnn_adv", "ae_ce_mse-dnn"):
        assert summary[name]["worst"] == round(source(metrics, f"robustness/{name}.json")["worst_case_accuracy"], 4)
        assert set(summary[name]) == {"natural", "pgd200", "worst"}
    for name in ("dnn", "ae_mse-dnn"):   # no adaptive-suite file: no worst case
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
    assert summary["_headline"] == {
        "aaa": "ae_ce_mse-dnn", "madry": "dnn_adv", "aaa_pgd": round(aaa, 4), "madry_pgd": round(madry, 4),
        "aaa_worst": round(source(metrics, "robustness/ae_ce_mse-dnn.json")["worst_case_accuracy"], 4),
        "madry_worst": round(source(metrics, "robustness/dnn_adv.json")["worst_case_accuracy"], 4)}
    assert len(text.splitlines()) < 60


def test_headline_loss_option_and_missing_worst(tmp_path):
    metrics = copy_metrics(tmp_path / "metrics", FILES)
    result = run(metrics, tmp_path / "out", "--loss", "mse")
    assert result.exit_code == 0, result.output
    head = json.loads((tmp_path / "out" / "summary.json").read_text())["mnist"]["_headline"]
    assert head["aaa"] == "ae_mse-dnn"
    assert head["aaa_pgd"] == round(source(metrics, "evaluate/ae_mse-dnn.json")["robust_accuracy"]["pgd200"], 4)
    assert "aaa_worst" not in head and "madry_worst" in head
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
    metrics = copy_metrics(tmp_path / "metrics", ["evaluate/dnn.json"])
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
    metrics = copy_metrics(tmp_path / "metrics", ["train/dnn.json", "sweep_eps.json"])
    out = tmp_path / "out"
    result = run(metrics, out)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(metrics / "evaluate") in lines[0], result.output
    assert not (out / "summary.json").exists()
    assert run(tmp_path / "absent", out).exit_code == 1
