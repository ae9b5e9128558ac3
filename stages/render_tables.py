"""render_tables: the paper's tables with our numbers beside the paper's, and the figures, from metrics only."""
from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from aaa_core.io import atomic_path
from aaa_core.config import AE_LOSSES, load_params
from aaa_core.reporting.tables import (PAIRED_NOTE, budget_caption, caption, ensemble_table, knn_table, knn_versus_plain, load_examples, load_metrics, pipeline_model_name, reconstruction_figure, suite_by_pipeline, sweep_figure, table, training_cost, versus_madry, worst_caption)
from aaa_core.stats import percent_with_interval
from aaa_core.reporting.verdicts import classifier_naturals
from stages._cli import output_file, params_file, run

# dataset -> (paper section, [(title, classifier arch, paper table key)]) for Tables 1/2, 4/5 and 6/7; "{model}" in
# a title is the classifier's name with its constructor arguments where it is smaller than the paper's; a key
# "a.b" is paper section a, entry b
KNN_TABLES = {
    ds: [("Table 9: AAA with kNN latent reconstruction (classifier: DNN)", "dnn", "table9_knn_reconstruction_dnn"),
         ("Table 10: kNN latent reconstruction transferred to the FC classifier", "fc",
          "table10_knn_reconstruction_fc")]
    for ds in ("mnist", "fashion_mnist")
}
TABLES = {
    "mnist": ("mnist", [("Table 1: AAA against Madry adversarial training (classifier: DNN)", "dnn",
                         "table1_vs_adversarial_training"),
                        ("Table 2: the DNN's AEs transferred to the FC classifier", "fc",
                         "table2_transfer_to_fc")]),
    "fashion_mnist": ("fashion_mnist",
                      [("Table 4: AAA against Madry adversarial training (classifier: DNN)", "dnn",
                        "table4_vs_adversarial_training"),
                       ("Table 5: the DNN's AEs transferred to the FC classifier", "fc", "table5_transfer_to_fc")]),
    "cifar10": ("cifar10",
                [("Table 6: AAA against Madry adversarial training (classifier: {model})", "resnet",
                  "table6_vs_adversarial_training"),
                 ("Table 7a: the ResNet's AEs transferred to {model}", "vgg19", "table7_transfer.vgg19"),
                 ("Table 7b: the ResNet's AEs transferred to {model}", "dnn", "table7_transfer.dnn")]),
}
# What the paper's text does not let us read, said in every caption of that dataset.
PAPER_NOTES = {
    "fashion_mnist": "The paper's eps and step size are illegible in its text; eps 0.1 and step 0.01 are the common "
                     "values for Fashion-MNIST.",
    "cifar10": "The paper's PGD step count is illegible in its text; its one PGD column is shown beside our PGD-20 "
               "(eps 8/255, step 2/255: Madry et al.'s setting).",
}


def paper_entry(paper: dict, key: str) -> dict:
    for part in key.split("."):
        paper = paper[part]
    return paper


@click.command()
@click.option("--dataset", required=True)
@click.option("--metrics-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="metrics/<dataset>: evaluate/*.json, sweep_eps.json")
@click.option("--examples-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@params_file("--paper", "paper_path", "paper/reported_results.yaml")
@output_file("--out", help="Markdown report.")
@click.option("--figures-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@params_file()
def main(dataset: str, metrics_dir: Path, examples_dir: Path, paper_path: Path, out: Path, figures_dir: Path,
         params_path: Path) -> None:
    params = load_params(params_path)
    paper_section, tables = TABLES[dataset]
    paper = yaml.safe_load(paper_path.read_text())[paper_section]
    rows = load_metrics(metrics_dir / "evaluate")
    if not rows:
        raise click.ClickException(f"{metrics_dir / 'evaluate'} holds no metrics JSON; run the evaluate stages")
    steps = sorted(int(k[3:]) for k in rows[0]["robust_accuracy"])
    suite = suite_by_pipeline(load_metrics(metrics_dir / "robustness")) if (metrics_dir / "robustness").is_dir() else {}
    sweep = json.loads((metrics_dir / "sweep_eps.json").read_text())
    recon_png = figures_dir / f"{dataset}_reconstructions.png"
    sweep_png = figures_dir / f"{dataset}_sweep_eps.png"
    reconstruction_figure(load_examples(examples_dir, params.loss, tables[0][1]), recon_png)
    sweep_figure(sweep, sweep_png)
    lines = [f"# {rows[0]['label']}: AAA reproduction", "",
             f"Headline AE loss: `{params.loss}`. " + caption(rows, params.scale) + " " + PAPER_NOTES.get(dataset, ""), "",
             budget_caption(*(json.loads((metrics_dir / "train" / f"{name}.json").read_text())
                              for name in (f"{tables[0][1]}_adv", f"ae_{params.loss}"))), ""]
    if suite:
        lines += [worst_caption(suite), ""]
    for i, (title, arch, key) in enumerate(tables):
        clf = [m for m in rows if m["pipeline"]["classifier_arch"] == arch]
        if not clf:
            raise click.ClickException(f"{metrics_dir / 'evaluate'} has no pipeline on classifier {arch!r} for {title!r}")
        lines += [f"## {title.format(model=pipeline_model_name(clf[0]))}", "",
                  table(rows, paper_entry(paper, key), params.loss, arch, steps, suite,
                        not_run=[x for x in AE_LOSSES if x != params.loss and x not in params.other_losses]).to_markdown(index=False), ""]
        if i == 0:   # the table of AAA against Madry
            lines += [versus_madry(rows, suite, params.loss, arch, steps), ""]
    ensemble_dir = metrics_dir / "ensemble"
    lines += flat_section([*rows, *(load_metrics(ensemble_dir) if ensemble_dir.is_dir() else [])])
    lines += (ensemble_section(metrics_dir, rows, paper, steps, suite)
              + knn_section(metrics_dir, dataset, paper, params.loss, steps, classifier_naturals(rows)))
    lines += ["## Robust accuracy against eps", "",
              f"PGD-{sweep['attack']['steps']} with step 2.5 * eps / steps, one random start (its own per eps), on "
              f"{sweep['examples']} test images (the seeded random subset).", "", f"![accuracy against eps]({sweep_png.relative_to(out.parent)})",
              "", "## Reconstructions", "",
              "Per AE loss (headline first): clean test images, their reconstruction, the PGD adversarial "
              "example crafted through AE and classifier, and its reconstruction with the pipeline's prediction.",
              "", f"![reconstructions]({recon_png.relative_to(out.parent)})", ""]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


def flat_section(records: list[dict]) -> list[str]:
    """Pipelines whose PGD accuracy was flat over the step counts (evaluate's flat check): what the margin-loss
    PGD and Square found beside the cross-entropy PGD, on the same examples."""
    hit = [m for m in records if (m.get("flat_check") or {}).get("triggered")]
    lines = ["## Pipelines flat over PGD steps", ""]
    if not hit:
        return lines + ["No pipeline's PGD accuracy was flat over the step counts while above the floor "
                        "(evaluate.<dataset>.flat_min_acc), or the check did not run.", ""]
    lines += ["A pipeline whose accuracy under the paper's PGD does not fall from the shortest to the longest run "
              "(at most one example more fooled) while above the floor may owe it to a masked cross-entropy "
              "gradient. Each such pipeline was also attacked with the suite's margin-loss PGD and with Square "
              "(query-only) on the same examples; the worst case per example over the three is beside it. A large "
              "gap says the PGD column overstates robustness.", "",
              "| pipeline | PGD (longest) | attacks | their accuracies | worst case | gap (points) |",
              "|---|---|---|---|---|---|"]
    for m in hit:
        f, n = m["flat_check"], m["attack"]["examples"]
        name = Path(m["pipeline"]["classifier"]).stem if not m["pipeline"]["ae"] else \
            f"{Path(m['pipeline']['ae']).stem}-{Path(m['pipeline']['classifier']).stem}"
        pgd = m["robust_accuracy"][f"pgd{f['pgd_steps']}"]
        attacks = ", ".join(a["name"] for a in f["attacks"])
        accs = ", ".join(f"{100 * a['accuracy']:.1f}" for a in f["attacks"])
        lines.append(f"| {name} | {percent_with_interval(pgd, n)} | {attacks} | {accs} | "
                     f"{percent_with_interval(f['worst_case_accuracy'], n)} | {100 * f['gap']:.1f} |")
    return lines + [""]


def ensemble_section(metrics_dir: Path, evaluated: list[dict], paper: dict, steps: list[int],
                     suite: dict[str, dict]) -> list[str]:
    """Table 8 from metrics/<ds>/ensemble (ensemble AE, extra Madry baselines) and the ``evaluated`` rows."""
    folder = metrics_dir / "ensemble"
    if not folder.is_dir():
        return []
    extra = load_metrics(folder)
    ensemble = {m["pipeline"]["classifier_arch"]: m for m in extra if m["pipeline"]["ae"]}
    baselines = [m for m in extra + evaluated if not m["pipeline"]["ae"]]
    adversarial = {m["pipeline"]["classifier_arch"]: m for m in baselines
                   if m["pipeline"]["classifier_mode"] == "adversarial"}
    natural = {m["pipeline"]["classifier_arch"]: m for m in baselines if m["pipeline"]["classifier_mode"] == "natural"}
    train = metrics_dir / "train"
    ensemble_train = json.loads((train / "ae_ensemble.json").read_text())
    cost = [("AAA ensemble AE (" + ", ".join(Path(c).stem for c in ensemble_train["classifiers"]) + ")",
             training_cost(ensemble_train))]
    for arch in ensemble:
        path = train / f"{arch}_adv.json"
        if path.is_file():
            cost.append((f"Madry adversarial training of {pipeline_model_name(ensemble[arch])}",
                         training_cost(json.loads(path.read_text()))))
    cost_rows = "\n".join(f"| {name} | {it} | {sec / 60:.1f} |" for name, (it, sec) in cost)
    return ["## Table 8: one AE trained against an ensemble of classifiers", "",
            "The AE is trained with the headline loss against the frozen natural classifiers, one drawn at random "
            "per iteration. Same attack and test subset as above.", "",
            ensemble_table(natural, adversarial, ensemble, paper.get("table8_ensemble", {}), steps,
                           suite).to_markdown(index=False),
            "", "Training cost on this machine (iterations of the optimizer, wall time of the stage):", "",
            "| Approach | Iterations | Minutes |", "|---|---:|---:|", cost_rows, ""]


def knn_square_caption(rows: list[dict]) -> str:
    """What the worst case covers: with Square (query-only) where the stage ran it, and what Square alone found."""
    square = rows[0]["attack"].get("square")
    if not square:
        return ("*Worst* counts an example as robust only if it survives both. No query-only attack here, so a "
                "masked gradient that fools BPDA would go unseen.")
    def at_longest(counts: dict) -> int:   # {"pgd40": n, "pgd200": m} -> m
        return counts[max(counts, key=lambda k: int(k.removeprefix("pgd")))] if counts else 0

    found = {m["pipeline"]["ae_loss"] + "-" + m["pipeline"]["classifier_arch"]:
             at_longest(m.get("square_only_fooled", {})) for m in rows}
    missed = ", ".join(f"{name} {n}" for name, n in sorted(found.items()) if n) or "none on any pipeline"
    apgd = rows[0]["attack"].get("apgd_bpda")
    apgd_text = (f"*APGD-CE BPDA* is APGD-CE ({apgd['steps']} steps, {apgd['restarts']} restarts, each from its own "
                 f"seed, {apgd['library']}) through the same straight-through gradient, every restart's output "
                 "classified by the true kNN pipeline. " if apgd else "")
    return (apgd_text + f"*Square* is the query-only attack ({square['queries']} queries, margin loss, p_init "
            f"{square['p_init']}, {square['library']}) on the true kNN pipeline, which needs no gradient: a "
            "straight-through gradient that misleads BPDA cannot hide robustness from it. *Worst* counts an "
            "example as robust only if it survives the non-adaptive attack, BPDA"
            + (", APGD-CE BPDA" if apgd else "") + " and Square. Examples only Square "
            f"fooled (robust under every gradient attack at the longest PGD): {missed}.")


def knn_section(metrics_dir: Path, dataset: str, paper: dict, headline: str, steps: list[int],
                alone: dict[str, float] | None = None) -> list[str]:
    """The kNN tables and, per classifier, whether kNN helps (paired verdicts); ``alone``: the classifiers'
    natural accuracy alone (``verdicts.classifier_naturals`` of the evaluate records), to mark collapse."""
    folder = metrics_dir / "knn"
    if not folder.is_dir() or dataset not in KNN_TABLES:
        return []
    rows = load_metrics(folder)
    first = rows[0]
    lines = ["## kNN latent reconstruction", "",
             f"The latent of each input is replaced by the mean of its {first['pipeline']['knn']['k']} nearest training "
             f"latents ({first['pipeline']['knn']['bank_size']} latents of {first['pipeline']['knn']['latent_dim']} "
             f"dimensions, exact search) before decoding. {first['attack']['examples']} test images (the seeded random subset). "
             "*Non-adaptive* is the paper's protocol: PGD crafted on AE + classifier without kNN, then classified "
             "with it. *BPDA* attacks through the kNN step with a straight-through gradient (the plain gradient "
             "is zero). " + knn_square_caption(rows), ""]
    for title, arch, key in KNN_TABLES[dataset]:
        lines += [f"## {title}", "",
                  knn_table(rows, paper.get(key, {}), headline, arch, steps, alone).to_markdown(index=False), ""]
        versus = knn_versus_plain(rows, headline, arch, steps, alone)
        if len(versus):
            lines += [f"Does kNN help ({arch.upper()})? On the same {first['attack']['examples']} test images: the "
                      "plain AE under white-box PGD (final iterate), AE + kNN on those very adversarial examples, "
                      "AE + kNN's worst case (every attack above) and, where recorded, the plain AE's worst case "
                      "under the same attacks (its own PGD, APGD-CE and Square at the same budgets). The verdict "
                      "compares kNN's worst case with the plain AE's (else with the plain AE under PGD), the "
                      "strongest attacks each got, on the same examples (kNN first). "
                      + PAIRED_NOTE, "",
                      versus.to_markdown(index=False), ""]
    return lines


if __name__ == "__main__":
    run(main)
