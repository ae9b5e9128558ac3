"""render_tables: the paper's tables with our numbers beside the paper's, and the figures, from metrics only."""
from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from aaa_core.checkpoints import atomic_path
from aaa_core.config import load_params
from aaa_core.report import caption, load_examples, load_metrics, reconstruction_figure, sweep_figure, table

# dataset -> (paper section, [(title, classifier arch, paper table key)])
TABLES = {
    "mnist": ("mnist", [("Table 1: AAA against Madry adversarial training (classifier: DNN)", "dnn",
                         "table1_vs_adversarial_training"),
                        ("Table 2: the DNN's AEs transferred to the FC classifier", "fc",
                         "table2_transfer_to_fc")]),
}


@click.command()
@click.option("--dataset", required=True)
@click.option("--metrics-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="metrics/<dataset>: evaluate/*.json, sweep_eps.json")
@click.option("--examples-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--paper", "paper_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="paper/reported_results.yaml", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Markdown report.")
@click.option("--figures-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, metrics_dir: Path, examples_dir: Path, paper_path: Path, out: Path, figures_dir: Path,
         params_path: Path) -> None:
    params = load_params(params_path)
    paper_section, tables = TABLES[dataset]
    paper = yaml.safe_load(paper_path.read_text())[paper_section]
    rows = load_metrics(metrics_dir / "evaluate")
    if not rows:
        raise click.ClickException(f"{metrics_dir / 'evaluate'} holds no metrics JSON; run the evaluate stages")
    steps = sorted(int(k[3:]) for k in rows[0]["robust_accuracy"])
    sweep = json.loads((metrics_dir / "sweep_eps.json").read_text())
    recon_png = figures_dir / f"{dataset}_reconstructions.png"
    sweep_png = figures_dir / f"{dataset}_sweep_eps.png"
    reconstruction_figure(load_examples(examples_dir, params.loss, tables[0][1]), recon_png)
    sweep_figure(sweep, sweep_png)
    lines = [f"# {rows[0]['label']}: AAA reproduction", "",
             f"Headline AE loss: `{params.loss}`. " + caption(rows, params.scale), ""]
    for title, arch, key in tables:
        lines += [f"## {title}", "", table(rows, paper[key], params.loss, arch, steps).to_markdown(index=False), ""]
    lines += ["## Robust accuracy against eps", "",
              f"PGD-{sweep['attack']['steps']} with step 2.5 * eps / steps, one random start, on the first "
              f"{sweep['examples']} test images.", "", f"![accuracy against eps]({sweep_png.relative_to(out.parent)})",
              "", "## Reconstructions", "",
              "Per AE loss (headline first): clean test images, their reconstruction, the PGD adversarial "
              "example crafted through AE and classifier, and its reconstruction with the pipeline's prediction.",
              "", f"![reconstructions]({recon_png.relative_to(out.parent)})", ""]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
