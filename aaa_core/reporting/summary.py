"""The headline metrics of one dataset and the data files of its DVC plots, from the stages' metrics JSON only.

``summarize`` reads metrics/<dataset> (evaluate/, ensemble/, robustness/, knn/) and returns a small flat dict:
per pipeline its natural accuracy, the paper-protocol PGD accuracy at the largest evaluated step count (key as in
the evaluate JSON, e.g. ``pgd200``) and, where the adaptive suite ran on it, the suite's worst case; a
``_headline`` entry, first, compares the headline AAA pipeline with Madry adversarial training. The plot tables
(``training_tables``, ``eps_table``, ``aaa_vs_madry_table``) are flat CSV records that DVC's built-in templates
draw without a grouping column: one training file per model, one column per curve against eps. Whatever metrics
file is missing (a partial DAG) is left out; only a missing ``evaluate`` folder is an error.

An AE pipeline that has collapsed (natural accuracy below half of its classifier's alone, ``aaa_core.reporting.verdicts``)
carries ``"collapsed": true`` in its row and ``(collapsed)`` after its name in the bar chart's table. Where the
metrics keep per-example flags, the headline adds the paired test of AAA against Madry (exact McNemar on the
same examples): ``pgd_p``, ``pgd_aaa_only``, ``pgd_madry_only`` (and ``worst_...`` for the suite's worst case);
older metrics without flags add nothing, and a collapsed headline AE gets ``aaa_collapsed`` instead.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from aaa_core.io import atomic_path, write_json
from aaa_core.reporting.verdicts import (
    Scored,
    Verdict,
    classifier_naturals,
    collapse_of,
    example_count,
    example_set,
    judge,
)

DIGITS = 4
# The headline entry's key, first in the file. `dvc exp show` keeps the file's order, but `dvc metrics show` and
# `dvc metrics diff` sort keys by code point: "_" sorts before the lowercase pipeline names, so it is first there too.
HEADLINE = "_headline"
# The AE's source classifier (the one it was trained against) per dataset, as in dvc.yaml's evaluate@<dataset> stage
# (its eps sweep's `src`).
SOURCE = {"mnist": "dnn", "fashion_mnist": "dnn", "cifar10": "resnet"}
TRAINING_FIELDS = ["epoch", "loss", "val_loss"]
BAR_FIELDS = ["pipeline", "natural", "pgd", "worst"]


class MissingMetricsError(FileNotFoundError):
    """The metrics folder has nothing to summarize (no evaluate/*.json)."""


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), DIGITS)


def load_folder(folder: Path) -> dict[str, dict]:
    """``{file stem: metrics}`` of every JSON in ``folder``, sorted by name; empty where the folder is absent."""
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def last_step_key(robust: dict) -> str:
    """The key of the largest step count among ``pgd<steps>`` keys (``pgd200`` of pgd40/pgd200)."""
    keys = [k for k in robust if re.fullmatch(r"[a-z_]*\d+", k)]
    if not keys:
        raise ValueError(f"no step-count keys (like pgd200) in {sorted(robust)}")
    return max(keys, key=lambda k: int(re.search(r"\d+$", k).group()))


def pipeline_row(evaluated: dict, robustness: dict | None) -> dict:
    """natural, ``pgd<last steps>`` and, with a suite result, ``worst``: one table row of the summary."""
    key = last_step_key(evaluated["robust_accuracy"])
    row = {"natural": _round(evaluated["natural_accuracy"]), key: _round(evaluated["robust_accuracy"][key])}
    if robustness is not None:
        row["worst"] = _round(robustness["worst_case_accuracy"])
    return row


def knn_row(knn: dict) -> dict:
    """The kNN pipeline's natural accuracy and its worst case (non-adaptive and BPDA) at the last step count."""
    worst = knn["robust_accuracy"]["worst_case"]
    return {"natural": _round(knn["natural_accuracy"]), "worst": _round(worst[last_step_key(worst)])}


def load_all(metrics_dir: Path) -> dict[str, dict[str, dict]]:
    """The metrics of every evaluation folder; raises ``MissingMetricsError`` without evaluate/*.json."""
    folders = {name: load_folder(metrics_dir / name) for name in ("evaluate", "ensemble", "robustness", "knn")}
    if not folders["evaluate"]:
        raise MissingMetricsError(f"{metrics_dir / 'evaluate'} holds no metrics JSON to summarize; "
                                  "run the evaluate stages first")
    return folders


def _find(rows: dict[str, dict], ensemble: dict[str, dict], name: str) -> dict | None:
    """A pipeline's summary row, from the evaluate rows or else the ensemble rows (MNIST's fc_adv lives there)."""
    return rows.get(name) or ensemble.get(name)


def _pgd(row: dict) -> float | None:
    """A summary row's PGD accuracy, whatever its step count key."""
    return next((v for k, v in row.items() if k not in ("natural", "worst", "collapsed")), None)


def headline(rows: dict[str, dict], ensemble: dict[str, dict], loss: str, source: str) -> dict:
    """The headline AAA pipeline (``ae_<loss>-<source>``) against Madry (``<source>_adv``); missing values left out."""
    aaa, madry = f"ae_{loss}-{source}", f"{source}_adv"
    out: dict = {"aaa": aaa, "madry": madry}
    for label, name in (("aaa", aaa), ("madry", madry)):
        pgd = _pgd(_find(rows, ensemble, name) or {})
        if pgd is not None:
            out[f"{label}_pgd"] = pgd
    for label, name in (("aaa", aaa), ("madry", madry)):
        row = _find(rows, ensemble, name) or {}
        if "worst" in row:
            out[f"{label}_worst"] = row["worst"]
    return out


def _marked(row: dict, m: dict, alone: dict[str, float]) -> dict:
    """``row`` with ``"collapsed": True`` where the pipeline of record ``m`` has collapsed (``verdicts.collapse_of``)."""
    return {**row, "collapsed": True} if collapse_of(m, alone) else row


@dataclass(frozen=True)
class HeadlinePair:
    """The headline AAA pipeline against Madry under one measure: ``label`` ("PGD-200", "suite worst case"),
    each side's score (named "AAA" and "Madry") and the paired verdict (``verdicts.judge``) of AAA against Madry."""
    label: str
    aaa: Scored
    madry: Scored
    verdict: Verdict


def headline_pairs(folders: dict[str, dict[str, dict]], loss: str, source: str) -> dict[str, HeadlinePair]:
    """The headline AAA pipeline (``ae_<loss>-<source>``) against Madry (``<source>_adv``) from the metrics of one
    dataset (``load_all``): ``"pgd"`` from the evaluate (or ensemble) records at the AAA record's last step count
    (their ``robust_flags``), ``"worst"`` from the suite's records (their ``worst_case_flags``), each only where
    both records exist. A side's ``collapsed`` is its collapse against its classifier alone
    (``verdicts.collapse_of``), its ``n`` None where older metrics state no example count; a verdict without
    per-example flags says so (``verdicts.judge``)."""
    aaa, madry = f"ae_{loss}-{source}", f"{source}_adv"
    records = {**folders["ensemble"], **folders["evaluate"]}
    alone = classifier_naturals(records.values())
    out: dict[str, HeadlinePair] = {}
    pairs = {"pgd": (records.get(aaa), records.get(madry)),
             "worst": (folders["robustness"].get(aaa), folders["robustness"].get(madry))}
    for measure, (a, m) in pairs.items():
        if a is None or m is None:
            continue
        if measure == "pgd":
            key = last_step_key(a["robust_accuracy"])
            label = "PGD-" + re.search(r"\d+$", key).group()
            flags = [(r.get("robust_flags") or {}).get(key) for r in (a, m)]
            accs = [r["robust_accuracy"].get(key) for r in (a, m)]
        else:
            label = "suite worst case"
            flags = [r.get("worst_case_flags") for r in (a, m)]
            accs = [r["worst_case_accuracy"] for r in (a, m)]
        sides = [Scored(name, acc, _example_count(r), f, example_set(r), collapse_of(r, alone))
                 for name, r, acc, f in zip(("AAA", "Madry"), (a, m), accs, flags)]
        out[measure] = HeadlinePair(label, *sides, judge(*sides))
    return out


def _example_count(record: dict) -> int | None:
    """``verdicts.example_count`` of ``record``; None for older metrics that state no count (nor flags)."""
    try:
        return example_count(record)
    except KeyError:
        return None


def paired_headline(folders: dict[str, dict[str, dict]], loss: str, source: str) -> dict:
    """The headline's paired test of AAA against Madry (``headline_pairs``) where both records keep per-example
    flags on the same examples: ``<measure>_p`` and the two discordant counts, for ``pgd`` and ``worst``;
    ``aaa_collapsed`` where the headline AE has collapsed. Nothing for what the metrics cannot pair."""
    out: dict = {}
    for measure, pair in headline_pairs(folders, loss, source).items():
        if pair.aaa.collapsed:
            out["aaa_collapsed"] = True
        if pair.verdict.counts is None or None in (pair.aaa.accuracy, pair.madry.accuracy):
            continue   # older metrics, a collapsed AE or other examples: nothing to pair
        out.update({f"{measure}_p": _round(pair.verdict.p), f"{measure}_aaa_only": pair.verdict.counts.first_only,
                    f"{measure}_madry_only": pair.verdict.counts.second_only})
    return out


def summarize(metrics_dir: Path, loss: str, source: str) -> dict:
    """The summary metrics of one dataset: headline first, then each evaluated pipeline, ensemble, kNN."""
    folders = load_all(metrics_dir)
    suite = folders["robustness"]
    alone = classifier_naturals([*folders["evaluate"].values(), *folders["ensemble"].values()])
    rows = {name: _marked(pipeline_row(m, suite.get(name)), m, alone) for name, m in folders["evaluate"].items()}
    ensemble = {name: _marked(pipeline_row(m, suite.get(name)), m, alone) for name, m in folders["ensemble"].items()}
    summary: dict = {HEADLINE: {**headline(rows, ensemble, loss, source), **paired_headline(folders, loss, source)},
                     **rows}
    if ensemble:
        summary["ensemble"] = ensemble
    if folders["knn"]:
        summary["knn"] = {name: _marked(knn_row(m), m, alone) for name, m in folders["knn"].items()}
    return summary


def training_tables(metrics_dir: Path) -> dict[str, list[dict]]:
    """``{model: [{epoch, loss, val_loss}, ...]}`` from every train/*.json history."""
    return {name: [{f: _round(h.get(f)) if f != "epoch" else h["epoch"] for f in TRAINING_FIELDS}
                   for h in m.get("history") or []]
            for name, m in load_folder(metrics_dir / "train").items()}


def _curve_name(label: str, loss: str, source: str) -> str:
    """sweep_eps.json's curve label as a column: aaa, natural, madry for the headline trio, else a pipeline name."""
    fixed = {f"ae_{loss} + {source}": "aaa", f"{source} (natural)": "natural", f"{source} (adversarial)": "madry"}
    if label in fixed:
        return fixed[label]
    match = re.fullmatch(r"(\S+) \+ (\S+)", label) or re.fullmatch(r"(\S+) \((natural|adversarial)\)", label)
    if not match:
        return label
    first, second = match.groups()
    return {"natural": first, "adversarial": f"{first}_adv"}.get(second, f"{first}-{second}")


def eps_table(sweep: dict | None, loss: str, source: str) -> tuple[list[str], list[dict]]:
    """(columns, rows) of accuracy against eps: one row per eps, one column per curve (aaa, natural, madry)."""
    if not sweep:
        return ["eps", "aaa", "natural", "madry"], []
    loss = sweep.get("headline_loss", loss)   # the AE the sweep ran is its "aaa" curve
    curves = {_curve_name(label, loss, source): points for label, points in sweep["curves"].items()}
    order = ["aaa", "natural", "madry"]
    columns = ["eps"] + sorted(curves, key=lambda c: (order.index(c) if c in order else len(order), c))
    by_eps: dict[float, dict] = {}
    for name, points in curves.items():
        for p in points:
            by_eps.setdefault(p["eps"], {"eps": p["eps"]})[name] = _round(p["accuracy"])
    return columns, [by_eps[eps] for eps in sorted(by_eps)]


def aaa_vs_madry_table(summary: dict, source: str, headline_loss: str) -> list[dict]:
    """The bar chart's rows: natural <source>, Madry, each AE on <source> (headline first), the ensemble AE."""
    rows = {k: v for k, v in summary.items() if k not in (HEADLINE, "ensemble", "knn")}
    ensemble = summary.get("ensemble", {})
    aes = sorted((k for k in rows if k.startswith("ae_") and k.endswith(f"-{source}")),
                 key=lambda k: (k != f"ae_{headline_loss}-{source}", k))
    names = [source, f"{source}_adv", *aes, f"ae_ensemble-{source}"]
    out = []
    for name in names:
        row = _find(rows, ensemble, name)
        if row is None:
            continue
        out.append({"pipeline": name + (" (collapsed)" if row.get("collapsed") else ""), "natural": row["natural"],
                    "pgd": _pgd(row), "worst": row.get("worst")})
    return out


def write_csv(rows: Iterable[dict], columns: list[str], path: Path) -> None:
    """A CSV with a header row (also when there are no rows), written atomically; None is an empty cell."""
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_all(dataset: str, metrics_dir: Path, summary_path: Path, plots_dir: Path, loss: str, source: str) -> dict:
    """The summary (under one key, the dataset: ``dvc exp show`` then names each column without its file), plots/<ds>/training/<model>.csv, eps.csv and aaa_vs_madry.csv; returns the summary."""
    summary = summarize(metrics_dir, loss, source)
    training = training_tables(metrics_dir)
    sweep_path = metrics_dir / "sweep_eps.json"
    eps_columns, eps_rows = eps_table(json.loads(sweep_path.read_text()) if sweep_path.is_file() else None,
                                      loss, source)
    training_dir = plots_dir / "training"
    training_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in training.items():
        write_csv(rows, TRAINING_FIELDS, training_dir / f"{name}.csv")
    for stale in training_dir.glob("*.csv"):   # a model whose train metrics are gone
        if stale.stem not in training:
            stale.unlink()
    write_csv(eps_rows, eps_columns, plots_dir / "eps.csv")
    write_csv(aaa_vs_madry_table(summary, source, loss), BAR_FIELDS, plots_dir / "aaa_vs_madry.csv")
    write_json({dataset: summary}, summary_path)
    return summary
