"""render_robustness: reports/robustness.md, every pipeline under every attack and the worst case, from metrics."""
from __future__ import annotations

from pathlib import Path

import click

from aaa_core.io import atomic_path
from aaa_core.config import load_params
from aaa_core.reporting.tables import load_metrics, robustness_section, robustness_figure
from aaa_core.reporting.verdicts import classifier_naturals
from stages._cli import output_file, params_file, run


@click.command()
@click.option("--metrics-root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="metrics/: reads <dataset>/robustness/*.json for every dataset that has them.")
@output_file("--out")
@click.option("--figures-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@params_file()
def main(metrics_root: Path, out: Path, figures_dir: Path, params_path: Path) -> None:
    params = load_params(params_path)
    folders = sorted(p for p in metrics_root.glob("*/robustness") if p.is_dir())
    if not folders:
        raise click.ClickException(f"no {metrics_root}/<dataset>/robustness folder: run the robustness stages")
    lines = ["# Robustness under adaptive attacks", "",
             "Every pipeline is attacked white-box through the whole pipeline (AE and classifier together), by a "
             "query-only attack that needs no gradients, and by transfer attacks. Robust accuracy per example is "
             "the worst case over all attacks: an example counts only if no attack fooled the pipeline. "
             "Accuracies in percent; all attacks L-inf, float32, models in eval mode. "
             f"Scale `{params.scale}`. The stage fails instead of reporting if a sanity check fails (listed below "
             "each table).", ""]
    for folder in folders:
        rows = load_metrics(folder)
        figure = figures_dir / f"robustness_{folder.parent.name}.png"
        robustness_figure(rows, figure)
        evaluated = folder.parent / "evaluate"   # each classifier alone, for the collapse check
        alone = classifier_naturals(load_metrics(evaluated)) if evaluated.is_dir() else {}
        lines += robustness_section(rows, figure.relative_to(out.parent), alone)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run(main)
