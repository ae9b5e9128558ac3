"""render_ablations: the AE training variants of ablations.yaml beside the study's ae_ce_mse.

Reads the study's ae_ce_mse metrics (the reference: params.yaml's ae.<dataset> warm_epochs and mse_weight) and each variant's
training and evaluation metrics; writes reports/ablations_<ds>.md and a small summary metrics file.

Each variant is judged against the study's AE per classifier and measure by the exact paired test on the same
examples (``aaa_core.reporting.verdicts.judge``: the evaluate records' ``natural_flags`` and ``robust_flags``). A
variant that has collapsed on a classifier (natural accuracy below half of that classifier's alone, read
from the study's ``evaluate/<classifier>.json`` where present) is marked and left out of that classifier's
verdicts.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from aaa_core.config import VariantConfig, load_variants
from aaa_core.io import atomic_path, write_json
from aaa_core.config import load_params
from aaa_core.errors import AAAError
from aaa_core.stats import percent_with_interval
from aaa_core.reporting.verdicts import Scored, Verdict, collapse_reason, example_set, judge
from stages._cli import output_file, params_file, run

STUDY = "study"
CLASSIFIERS = ("dnn", "fc")
MEASURES = ("natural", "pgd")


def read(path: Path) -> dict:
    if not path.is_file():
        raise AAAError(f"{path}: missing; run `dvc repro ablations/dvc.yaml` (or the study for the reference)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AAAError(f"{path}: not valid JSON ({err.msg}); re-run the stage that writes it") from None


def measures(evaluate: dict) -> dict[str, tuple[float, int]]:
    n = evaluate["attack"]["examples"]
    return {"natural": (evaluate["natural_accuracy"], n),
            "pgd": (evaluate["robust_accuracy"][f"pgd{evaluate['attack']['steps']}"], n)}


def scored(name: str, evaluate: dict, collapsed: str | None) -> dict[str, Scored]:
    """One AE on one classifier under each measure, with its per-example flags for the paired verdict."""
    key = f"pgd{evaluate['attack']['steps']}"
    (natural, n), (pgd, _) = measures(evaluate).values()
    return {"natural": Scored(name, natural, n, evaluate.get("natural_flags"), example_set(evaluate), collapsed),
            "pgd": Scored(name, pgd, n, (evaluate.get("robust_flags") or {}).get(key), example_set(evaluate),
                          collapsed)}


def outcome_word(v: Verdict, variant: str) -> str:
    """The summary's one word of a verdict of ``variant`` against the study: higher, lower, or why not."""
    if v.outcome == "better":
        return "higher" if v.better == variant else "lower"
    return v.outcome


def read_optional(path: Path) -> dict | None:
    return read(path) if path.is_file() else None


@click.command()
@click.option("--dataset", required=True)
@click.option("--study-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--dir", "variants_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@output_file("--out")
@output_file("--summary", "summary_path")
@params_file()
@params_file("--ablations", "ablations_path", "ablations.yaml")
@params_file("--paper", "paper_path", "paper/reported_results.yaml")
def main(dataset: str, study_dir: Path, variants_dir: Path, out: Path, summary_path: Path, params_path: Path,
         ablations_path: Path, paper_path: Path) -> None:
    params = load_params(params_path)
    ae = params.section("ae", dataset)   # the study's own AE: params.yaml's training knobs
    variants = {STUDY: VariantConfig(warm_epochs=ae.warm_epochs, mse_weight=ae.mse_weight),
                **load_variants(ablations_path, dataset)}
    # each classifier alone (the study's natural dnn and fc): the collapse rule's reference, where measured
    alone = {c: read_optional(study_dir / "evaluate" / f"{c}.json") for c in CLASSIFIERS}
    rows = {}
    for name in variants:
        if name == STUDY:
            train = read(study_dir / "train" / "ae_ce_mse.json")
            dnn, fc = (read(study_dir / "evaluate" / f"ae_ce_mse-{c}.json") for c in CLASSIFIERS)
        else:
            train = read(variants_dir / f"train_{name}.json")
            dnn, fc = (read(variants_dir / f"evaluate_{name}-{c}.json") for c in CLASSIFIERS)
        collapsed = {c: collapse_reason(m["natural_accuracy"], alone[c] and alone[c]["natural_accuracy"])
                     for c, m in zip(CLASSIFIERS, (dnn, fc))}
        rows[name] = {"train": train, "dnn": measures(dnn), "fc": measures(fc), "steps": dnn["attack"]["steps"],
                      "examples": dnn["attack"]["examples"], "collapsed": collapsed,
                      "scored": {c: scored(name, m, collapsed[c]) for c, m in zip(CLASSIFIERS, (dnn, fc))}}
    paper = yaml.safe_load(paper_path.read_text())[dataset]
    p_dnn, p_fc = paper["table1_vs_adversarial_training"]["aaa_ce_mse"], paper["table2_transfer_to_fc"]["aaa_ce_mse"]
    steps, n = rows[STUDY]["steps"], rows[STUDY]["examples"]
    lines = [f"# {dataset}: AE training variants (warm start, MSE weight)", "",
             f"Scale `{params.scale}`. Each variant is the study's `ae_ce_mse` (L = ce + weight * mse, trained against "
             "the natural `dnn` at the study's budget and seed, so it sees the same batches and attack starts) with "
             "the changes named: `warm` = epochs of clean reconstruction (no attack, no classifier) before "
             "adversarial training, `weight` = the MSE term's weight. The first row is the study's own AE. "
             f"Evaluated like Tables 1 and 2: {n} test images (the study's seeded random subset), PGD-{steps} (eps and step of `threat`), on "
             "the `dnn` and transferred to the `fc` it never saw; percent with 95% Wilson intervals. The paper's "
             f"L_ce+mse: DNN {p_dnn.get('natural', '-')} natural, {p_dnn.get(f'pgd{steps}', '-')} PGD-{steps}; "
             f"FC {p_fc.get('natural', '-')} natural, {p_fc.get(f'pgd{steps}', '-')} PGD-{steps} ('-': the paper "
             "reports no such step count). The training loss is each variant's own objective "
             "(a larger weight adds a larger MSE term); chance for the CE term alone is ln 10 = 2.30.", "",
             f"| variant | warm | weight | loss, epoch 1 | loss, last | DNN natural | DNN PGD-{steps} | FC natural "
             f"| FC PGD-{steps} |", "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for name, row in rows.items():
        hist = row["train"]["history"]
        cells = [percent_with_interval(*row[c][m]) for c in CLASSIFIERS for m in MEASURES]
        marks = "".join(f" [{c.upper()} {why}]" for c, why in row["collapsed"].items() if why)
        lines.append(f"| {name}{marks} | {variants[name].warm_epochs} | {variants[name].mse_weight:g} | "
                     f"{hist[0]['loss']:.3f} | {hist[-1]['loss']:.3f} | " + " | ".join(cells) + " |")
        summary[name] = {"warm_epochs": variants[name].warm_epochs, "mse_weight": variants[name].mse_weight,
                         **{f"{c}_{m}": row[c][m][0] for c in CLASSIFIERS for m in MEASURES}}
        if any(row["collapsed"].values()):
            summary[name]["collapsed"] = sorted(c for c, why in row["collapsed"].items() if why)
    missing = [f"evaluate/{c}.json" for c in CLASSIFIERS if alone[c] is None]
    lines += ["", "Against the study's AE, paired on the same examples: the exact two-sided McNemar test at 0.05 "
              "(\"n vs m discordant\": examples only the better side, or for an inconclusive verdict the variant, "
              "gets right, against examples only the other does; \"inconclusive\" says the test could not "
              "separate them, not that they are equal). "
              + (f"Collapse not checked on the classifier(s) without metrics alone ({', '.join(missing)} of the "
                 "study)." if missing else "An AE whose natural accuracy on a classifier is below half of that "
                 "classifier's alone is marked collapsed and left out of that classifier's verdicts."), ""]
    for name, row in rows.items():
        if name == STUDY:
            continue
        verdicts = {f"{c} {m}": judge(row["scored"][c][m], rows[STUDY]["scored"][c][m])
                    for c in CLASSIFIERS for m in MEASURES}
        summary[name]["against_study"] = {k: outcome_word(v, name) for k, v in verdicts.items()}
        if any(v.p is not None for v in verdicts.values()):
            summary[name]["against_study_p"] = {k: v.p for k, v in verdicts.items() if v.p is not None}
        if len({v.text for v in verdicts.values()}) == 1 and next(iter(verdicts.values())).outcome == "no flags":
            lines.append(f"- {name}: {next(iter(verdicts.values())).text}")   # older metrics: one line says it
        else:
            lines.append(f"- {name}: " + "; ".join(f"{k}: {v.text}" for k, v in verdicts.items()))
    lines.append("")
    write_json({dataset: summary}, summary_path)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run(main)
