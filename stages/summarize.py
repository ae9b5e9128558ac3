"""summarize: one dataset's headline metrics (summary.json) and the data files of its DVC plots, from metrics only.

    python -m stages.summarize --dataset mnist --metrics-dir metrics/mnist \\
        --summary metrics/_headline/mnist.json --plots-dir plots/mnist [--loss ce_mse] [--source dnn]

Writes the headline file (per pipeline: natural, PGD at the last step count, the adaptive suite's worst case; a
``_headline`` entry first), <plots-dir>/training/<model>.csv (epoch, loss, val_loss), <plots-dir>/eps.csv (eps and
one accuracy column per curve: aaa, natural, madry) and <plots-dir>/aaa_vs_madry.csv (pipeline, natural, pgd,
worst). Metrics files that are missing are left out; a metrics dir without evaluate/*.json is an error.
"""
from __future__ import annotations

from pathlib import Path

import click

from aaa_core.reporting.summary import HEADLINE, SOURCE, MissingMetricsError, write_all
from stages._cli import output_file, run


@click.command()
@click.option("--dataset", required=True)
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="metrics/<dataset>: evaluate/, ensemble/, robustness/, knn/, train/, sweep_eps.json")
@output_file("--summary", "summary_path",
              help="The headline metrics JSON to write.")
@click.option("--plots-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the plot data: training/<model>.csv, eps.csv, aaa_vs_madry.csv.")
@click.option("--loss", default="ce_mse", show_default=True, help="The headline AE loss (params.yaml: loss).")
@click.option("--source", default=None,
              help="The AE's source classifier [default: dnn for mnist and fashion_mnist, resnet for cifar10].")
def main(dataset: str, metrics_dir: Path, summary_path: Path, plots_dir: Path, loss: str, source: str | None) -> None:
    if source is None:
        if dataset not in SOURCE:
            raise click.BadParameter(f"no default for dataset {dataset!r}; pass --source", param_hint="--source")
        source = SOURCE[dataset]
    try:
        summary = write_all(dataset, metrics_dir, summary_path, plots_dir, loss, source)
    except MissingMetricsError as err:
        raise click.ClickException(str(err)) from None
    head = summary[HEADLINE]
    click.echo(f"wrote {summary_path} ({len(summary) - 1} entries) and {plots_dir}; headline: "
               + ", ".join(f"{k} {v}" for k, v in head.items()))


if __name__ == "__main__":
    run(main)
