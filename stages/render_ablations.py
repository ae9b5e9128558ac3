"""render_ablations: the AE training variants of ablations.yaml beside the study's ae_ce_mse.

Reads the study's ae_ce_mse metrics (the reference: warm_epochs 0, mse_weight 1) and each variant's
training and evaluation metrics; writes reports/ablations_<ds>.md and a small summary metrics file.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from aaa_core.ablation import VariantConfig, load_variants
from aaa_core.checkpoints import atomic_path, write_json
from aaa_core.config import load_params
from aaa_core.errors import AAAError
from aaa_core.stats import percent_with_interval, wilson_interval
from stages._cli import run

STUDY = "study"


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


def compare(ours: tuple[float, int], ref: tuple[float, int]) -> str:
    """'higher', 'lower' (95% Wilson intervals apart) or 'tie' (they overlap)."""
    lo, hi = wilson_interval(round(ours[0] * ours[1]), ours[1])
    rlo, rhi = wilson_interval(round(ref[0] * ref[1]), ref[1])
    return "higher" if lo > rhi else "lower" if hi < rlo else "tie"


@click.command()
@click.option("--dataset", required=True)
@click.option("--study-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--dir", "variants_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
@click.option("--ablations", "ablations_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="ablations.yaml", show_default=True)
@click.option("--paper", "paper_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="paper/reported_results.yaml", show_default=True)
def main(dataset: str, study_dir: Path, variants_dir: Path, out: Path, summary_path: Path, params_path: Path,
         ablations_path: Path, paper_path: Path) -> None:
    params = load_params(params_path)
    variants = {STUDY: VariantConfig(warm_epochs=0, mse_weight=1.0), **load_variants(ablations_path, dataset)}
    rows = {}
    for name in variants:
        if name == STUDY:
            train = read(study_dir / "train" / "ae_ce_mse.json")
            dnn, fc = (read(study_dir / "evaluate" / f"ae_ce_mse-{c}.json") for c in ("dnn", "fc"))
        else:
            train = read(variants_dir / f"train_{name}.json")
            dnn, fc = (read(variants_dir / f"evaluate_{name}-{c}.json") for c in ("dnn", "fc"))
        rows[name] = {"train": train, "dnn": measures(dnn), "fc": measures(fc), "steps": dnn["attack"]["steps"],
                      "examples": dnn["attack"]["examples"]}
    paper = yaml.safe_load(paper_path.read_text())[dataset]
    p_dnn, p_fc = paper["table1_vs_adversarial_training"]["aaa_ce_mse"], paper["table2_transfer_to_fc"]["aaa_ce_mse"]
    steps, n = rows[STUDY]["steps"], rows[STUDY]["examples"]
    lines = [f"# {dataset}: AE training variants (warm start, MSE weight)", "",
             f"Scale `{params.scale}`. Each variant is the study's `ae_ce_mse` (L = ce + weight * mse, trained against "
             "the natural `dnn` at the study's budget and seed, so it sees the same batches and attack starts) with "
             "the changes named: `warm` = epochs of clean reconstruction (no attack, no classifier) before "
             "adversarial training, `weight` = the MSE term's weight. The first row is the study's own AE. "
             f"Evaluated like Tables 1 and 2: first {n} test images, PGD-{steps} (eps and step of `threat`), on "
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
        cells = [percent_with_interval(*row[c][m]) for c in ("dnn", "fc") for m in ("natural", "pgd")]
        lines.append(f"| {name} | {variants[name].warm_epochs} | {variants[name].mse_weight:g} | "
                     f"{hist[0]['loss']:.3f} | {hist[-1]['loss']:.3f} | " + " | ".join(cells) + " |")
        summary[name] = {"warm_epochs": variants[name].warm_epochs, "mse_weight": variants[name].mse_weight,
                         **{f"{c}_{m}": row[c][m][0] for c in ("dnn", "fc") for m in ("natural", "pgd")}}
    lines += ["", "Against the study's AE (95% intervals apart, else a tie):", ""]
    for name, row in rows.items():
        if name == STUDY:
            continue
        verdicts = {f"{c} {m}": compare(row[c][m], rows[STUDY][c][m]) for c in ("dnn", "fc")
                    for m in ("natural", "pgd")}
        summary[name]["against_study"] = verdicts
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in verdicts.items()))
    lines.append("")
    write_json({dataset: summary}, summary_path)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run(main)
