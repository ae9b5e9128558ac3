"""render_comparison: the MNIST headline comparison across training seeds and under AutoAttack.

Reads the study's own metrics for seed offset 0 (metrics/<ds>/evaluate and robustness) and the
comparison pipeline's for the other seeds and for AutoAttack; writes reports/comparison_<ds>.md and a
small summary metrics file (mean, sd over seeds, verdict per measure).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from aaa_core.checkpoints import atomic_path, write_json
from aaa_core.comparison import MEASURES, Side, load_comparison, mean_sd, pct_interval, seed_measurements, summary
from aaa_core.config import load_params
from aaa_core.errors import AAAError
from stages._cli import run

# Croce & Hein (ICML 2020), Table 2: Madry et al.'s released MNIST model, eps 0.3
PUBLISHED = ("Madry et al.'s released MNIST model (PGD-40 adversarial training, 100,000 iterations of batch 50) "
             "under AutoAttack (standard, eps 0.3): 88.50% (Croce & Hein, 2020)")
COLUMNS = {"natural": "natural", "pgd": "PGD", "worst": "suite worst case", "autoattack": "AutoAttack"}


def read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AAAError(f"{path}: not valid JSON ({err.msg}); re-run the stage that writes it") from None


@click.command()
@click.option("--dataset", required=True)
@click.option("--loss", required=True, help="The headline AE loss (params.yaml's loss).")
@click.option("--source", required=True, help="The AE's source classifier, e.g. dnn.")
@click.option("--study-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The study's metrics of the dataset (seed offset 0).")
@click.option("--dir", "comparison_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
@click.option("--comparison", "comparison_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="comparison.yaml", show_default=True)
def main(dataset: str, loss: str, source: str, study_dir: Path, comparison_dir: Path, out: Path, summary_path: Path,
         params_path: Path, comparison_path: Path) -> None:
    params = load_params(params_path)
    cfg = load_comparison(comparison_path, dataset, params.scale)
    names = {"aaa": f"ae_{loss}-{source}", "madry": f"{source}_adv"}
    sides = {}
    for key, name in names.items():
        seeds = {0: seed_measurements(read(study_dir / "evaluate" / f"{name}.json"),
                                      read(study_dir / "robustness" / f"{name}.json"),
                                      read(comparison_dir / "s0" / f"autoattack_{name}.json"))}
        for offset in cfg.seed_offsets:
            d = comparison_dir / f"s{offset}"
            seeds[offset] = seed_measurements(read(d / f"evaluate_{name}.json"), read(d / f"robustness_{name}.json"),
                                              read(d / f"autoattack_{name}.json"))
        missing = {o: sorted(set(MEASURES) - set(m)) for o, m in seeds.items() if set(m) != set(MEASURES)}
        if missing:
            raise AAAError(f"{comparison_dir}: {name} lacks metrics at seed offset(s) {sorted(missing)} ("
                           + "; ".join(f"{o}: {', '.join(k)}" for o, k in sorted(missing.items()))
                           + "); run `dvc repro comparison/dvc.yaml`")
        sides[key] = Side(name, seeds)
    aaa, madry = sides["aaa"], sides["madry"]
    result = summary(aaa, madry)
    write_json({dataset: {"seeds": 1 + len(cfg.seed_offsets), **result}}, summary_path)

    def n_of(key: str) -> str:
        ns = sorted({m.n for side in (aaa, madry) for m in side.measure(key)})
        return "/".join(map(str, ns)) if ns else "-"

    header = ["pipeline", "seed"] + [f"{COLUMNS[k]} (n={n_of(k)})" for k in MEASURES]
    lines = [f"# {dataset}: AAA against Madry across training seeds, and under AutoAttack", "",
             f"Scale `{params.scale}`. AAA is `{aaa.name}` (the headline AE, loss `{loss}`, in front of the frozen "
             f"natural `{source}`); Madry is `{madry.name}`, trained with the same budget. Seed 0 is the study's "
             f"own models (params.yaml seed {params.seed}); seeds "
             + ", ".join(str(params.seed + o) for o in cfg.seed_offsets)
             + " re-train the AE and the Madry model at the same budget with another seed (initialisation, "
               "batches, training attack, validation split); the natural classifier is the study's. Every seed "
               "is scored on the same first test images by the same attacks: the study's PGD protocol "
               "(`evaluate`), the adaptive suite's worst case (`suite`) and AutoAttack's standard version "
               "(APGD-CE, APGD-T and FAB-T on 9 target classes at 100 iterations, Square with 5,000 queries; "
               "torchattacks, the cascade of Croce & Hein).",
             "",
             "Each accuracy: percent and its 95% Wilson interval over the examples; `mean +- sd` over seeds. "
             + ("The suite and AutoAttack ran on the same first images, but the suite keeps no per-example flags, "
                "so the lower of the two is an upper bound on their combined worst case."
                if n_of("worst") == n_of("autoattack") else
                f"The suite ran on the first {n_of('worst')} images and AutoAttack on the first "
                f"{n_of('autoattack')}, so the two are not on the same examples."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for side in (aaa, madry):
        for seed, ms in sorted(side.seeds.items()):
            lines.append(f"| {side.name} | {params.seed + seed} | "
                         + " | ".join(pct_interval(ms.get(k)) for k in MEASURES) + " |")
        lines.append(f"| {side.name} | mean +- sd | " + " | ".join(mean_sd(side.measure(k)) for k in MEASURES) + " |")
    lines += ["", "Verdict per measure (a side wins only where every seed's interval lies above every seed "
              "interval of the other side; otherwise a tie):", ""]
    lines += [f"- {COLUMNS[k]}: {result[k]['verdict']}" for k in MEASURES]
    lines += ["", f"For scale: {PUBLISHED}. That model had a far larger training budget than ours (see the "
              "study's budget caption), so only the gap between PGD and AutoAttack compares, not the levels.", ""]
    cascade = []
    for side in (aaa, madry):
        for seed in sorted(side.seeds):
            folder = comparison_dir / f"s{seed}"
            aa = read(folder / f"autoattack_{side.name}.json")
            if aa is not None:
                steps = ", ".join(f"{c['name']} {100 * c['accuracy_after']:.1f} ({c['seconds']:.0f} s)"
                                  for c in aa["cascade"])
                cascade.append(f"| {side.name} | {params.seed + seed} | {100 * aa['natural_accuracy']:.1f} | {steps} |")
    if cascade:
        lines += ["AutoAttack's cascade: accuracy after each attack (each runs on what the ones before left "
                  "correctly classified) and its time:", "", "| pipeline | seed | clean | after each attack |",
                  "|---|---|---|---|", *cascade, ""]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run(main)
