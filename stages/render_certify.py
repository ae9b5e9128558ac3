"""render_certify: reports/certify.md and reports/figures/certify_<dataset>.png from the certification pipeline.

Per dataset: certified accuracy by randomized smoothing at each L2 radius (with 95% Wilson intervals) for the
natural classifier, the headline AAA pipeline, Madry and the Gaussian-noise AE, at every sigma, beside each
pipeline's empirical L-inf robust accuracy from the study; then AAA against each other pipeline, certified at
a radius, on the same examples by the exact McNemar test.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import click

from aaa_core.io import atomic_path, certified_flags, read_certify_tsv
from aaa_core.config import load_params
from aaa_core.reporting.tables import pyplot
from aaa_core.stats import percent_with_interval
from aaa_core.stats import mcnemar
from aaa_core.reporting.verdicts import words
from stages._cli import output_file, params_file, run

LABELS = {"dnn": "natural classifier", "dnn_adv": "Madry", "ae_noise-dnn": "Gaussian-noise AE (denoised smoothing)"}
VERDICT_RADII = (0.25, 0.5)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def empirical(metrics_root: Path, dataset: str, name: str) -> str:
    """The pipeline's empirical L-inf accuracy from the study: the suite's worst case where it ran, else the
    paper protocol's longest PGD."""
    suite = _read(metrics_root / dataset / "robustness" / f"{name}.json")
    if suite is not None:
        return f"{percent_with_interval(suite['worst_case_accuracy'], suite['examples'])} (suite, n={suite['examples']})"
    ev = _read(metrics_root / dataset / "evaluate" / f"{name}.json") or \
        _read(metrics_root / "certify" / dataset / f"evaluate_{name}.json")
    if ev is None:
        return "not measured"
    steps, n = ev["attack"]["steps"], ev["attack"]["examples"]
    return f"{percent_with_interval(ev['robust_accuracy'][f'pgd{steps}'], n)} (PGD-{steps}, n={n})"


def label(name: str, loss: str) -> str:
    return f"AAA (ae_{loss})" if name == f"ae_{loss}-dnn" else LABELS.get(name, name)


def read_runs(tsv_root: Path, dataset: str, m: dict) -> dict[str, dict[str, list[dict]]]:
    """Every pipeline's TSV rows at every sigma of the metrics record ``m`` (certify.json), each file read once:
    ``{pipeline: {sigma key: rows of <tsv_root>/<dataset>/<pipeline>-sigma<key>.tsv}}``."""
    return {name: {key: read_certify_tsv(tsv_root / dataset / f"{name}-sigma{key}.tsv") for key in p["sigmas"]}
            for name, p in m["pipelines"].items()}


def section(metrics_root: Path, runs: dict[str, dict[str, list[dict]]], dataset: str, m: dict, loss: str,
            figure: Path, out: Path) -> list[str]:
    """The report's lines of one dataset: the certified-accuracy table of the metrics record ``m`` (certify.json),
    the figure's link and the paired verdicts of AAA against each other pipeline from the TSV rows ``runs``
    (``read_runs``)."""
    s = m["settings"]
    radii = s["radii"]
    lines = [f"## {m['label']}", "",
             f"CERTIFY (Cohen, Rosenfeld and Kolter 2019) on {m['examples']} test images (seeded, the study's order; "
             f"indices sha256 `{m['subset'].get('indices_sha256', '?')[:12]}`), n0 = {s['n0']} selection and n = "
             f"{s['n']} estimation samples per image, alpha = {s['alpha']} (one-sided Clopper-Pearson); every "
             f"pipeline on the same images and the same noise. With n = {s['n']} no radius can exceed "
             f"{NormalDist().inv_cdf(s['alpha'] ** (1 / s['n'])):.2f} sigma (every sample correct); the paper-scale setting is n = "
             "100,000. Certified accuracy "
             "at radius r: the smoothed pipeline is correct, does not abstain, and its certified L2 radius (pixel "
             "units, images in [0, 1]) is at least r. Percent with 95% Wilson interval. The last column is the "
             "same pipeline's empirical L-inf accuracy at the study's eps (a different threat model: shown beside, "
             "not compared).", "",
             "| pipeline | sigma | " + " | ".join(f"r = {r:g}" for r in radii) + " | abstained | L-inf (study) |",
             "|---|---|" + "---|" * (len(radii) + 2)]
    for name, p in m["pipelines"].items():
        for key, run_ in p["sigmas"].items():
            cells = [percent_with_interval(row["accuracy"], row["n"]) for row in run_["certified_accuracy"]]
            lines.append(f"| {label(name, loss)} | {key} | " + " | ".join(cells)
                         + f" | {100 * run_['abstention_rate']:.1f}% | {empirical(metrics_root, dataset, name)} |")
    aaa = f"ae_{loss}-dnn"
    lines += ["", f"![certified accuracy against radius]({figure.relative_to(out.parent)})", "",
              "AAA against each other pipeline, certified at a radius, paired on the same images (exact two-sided "
              "McNemar test at 0.05; \"inconclusive\" says the test could not separate them, not that they are "
              "equal):", ""]
    if aaa not in m["pipelines"]:
        return lines + ["- no AAA pipeline in the metrics", ""]
    for key in m["pipelines"][aaa]["sigmas"]:
        ours = runs[aaa][key]
        for name in m["pipelines"]:
            if name == aaa:
                continue
            theirs = runs[name][key]
            if [r["idx"] for r in ours] != [r["idx"] for r in theirs]:
                lines.append(f"- sigma {key}, AAA against {label(name, loss)}: not paired (different images)")
                continue
            verdicts = [f"r = {r:g}: " + words("AAA", label(name, loss), mcnemar(certified_flags(ours, r),
                                                                                    certified_flags(theirs, r))).text
                        for r in VERDICT_RADII]
            lines.append(f"- sigma {key}, AAA against {label(name, loss)}: " + "; ".join(verdicts))
    return lines + [""]


def curve_figure(runs: dict[str, dict[str, list[dict]]], m: dict, loss: str, path: Path) -> None:
    """Certified accuracy against radius from the TSV rows ``runs`` (``read_runs``) of the metrics record ``m``,
    a panel per sigma, a line per pipeline, written as a PNG to ``path``."""
    sigmas = list(next(iter(m["pipelines"].values()))["sigmas"])
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sigmas), figsize=(4.5 * len(sigmas), 3.4), squeeze=False)
    for ax, key in zip(axes[0], sigmas):
        for name in m["pipelines"]:
            rows = runs[name][key]
            grid = [i * 0.02 for i in range(0, 76)]
            ax.plot(grid, [sum(certified_flags(rows, r)) / len(rows) for r in grid], label=label(name, loss))
        ax.set(title=f"{m['label']}, sigma {key}", xlabel="L2 radius", ylabel="certified accuracy", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


@click.command()
@click.option("--metrics-root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="metrics/: certify/<dataset>/certify.json, and the study's <dataset>/evaluate and robustness.")
@click.option("--tsv-root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="reports/certify: <dataset>/<pipeline>-sigma<sigma>.tsv")
@output_file("--out")
@click.option("--figures-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@params_file()
def main(metrics_root: Path, tsv_root: Path, out: Path, figures_dir: Path, params_path: Path) -> None:
    params = load_params(params_path)
    found = sorted(p for p in (metrics_root / "certify").glob("*/certify.json"))
    if not found:
        raise click.ClickException(f"no {metrics_root}/certify/<dataset>/certify.json: run `dvc repro certify/dvc.yaml`")
    lines = ["# Certified robustness by randomized smoothing", "",
             "What each pipeline certifies in L2 when Gaussian noise is added to its input and the majority vote is "
             "taken (the smoothed pipeline): a radius no attack can move, unlike the empirical L-inf numbers of the "
             f"study. Scale `{params.scale}`; the AE of the denoised-smoothing reference has the headline AE's "
             "architecture, loss and budget, trained on Gaussian noise at the certified sigmas instead of PGD.", ""]
    for path in found:
        dataset = path.parent.name
        m = json.loads(path.read_text())
        figure = figures_dir / f"certify_{dataset}.png"
        runs = read_runs(tsv_root, dataset, m)
        curve_figure(runs, m, params.loss, figure)
        lines += section(metrics_root, runs, dataset, m, params.loss, figure, out)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run(main)
