"""certify: certified L2 robustness by randomized smoothing (``aaa_core.evaluation.certify``) of several pipelines of one
dataset, each at every sigma, on the same seeded test subset and the same noise.

Writes ``<out-dir>/<name>-sigma<sigma>.tsv`` per pipeline and sigma (Cohen's format) and one metrics file.
The TSVs are written to a temporary folder beside ``--out-dir`` and moved into it only when every pipeline
is done, and the metrics file last: a stage that fails midway leaves none of its outputs behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import click

from aaa_core.evaluation.certify import RADII, certify_dataset, summarize, write_tsv
from aaa_core.config import load_params
from aaa_core.data import describe_subset, test_order, test_subset
from aaa_core.errors import AAAError
from aaa_core.runtime import attack_seed, describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from aaa_core.models.checkpoints import load_pipeline
from stages._common import named_specs, write_metrics
from stages._cli import input_file, output_file, params_file, run


def tsv_name(name: str, sigma: float) -> str:
    return f"{name}-sigma{sigma:g}.tsv"


def publish(staging: Path, out_dir: Path) -> None:
    """Move every file of ``staging`` into ``out_dir`` (made if missing: then in one rename)."""
    if not out_dir.exists():
        staging.chmod(0o755)   # mkdtemp's folder is private; the published one reads like any other output
        os.rename(staging, out_dir)
        return
    for path in sorted(staging.iterdir()):
        os.replace(path, out_dir / path.name)


@click.command()
@click.option("--dataset", required=True)
@click.option("--pipeline", "pipeline_items", multiple=True, required=True,
              help="NAME=CLASSIFIER.pt, or NAME=AE.pt+CLASSIFIER.pt for a defended pipeline; repeatable.")
@click.option("--sigma", "sigma_options", type=float, multiple=True,
              help="Noise standard deviation, pixel units; repeatable (default: params certify.<dataset>.sigmas).")
@input_file("--data", "data_path", required=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where <name>-sigma<sigma>.tsv goes, per pipeline and sigma.")
@output_file("--metrics", "metrics_path")
@params_file()
def main(dataset: str, pipeline_items: tuple[str, ...], sigma_options: tuple[float, ...], data_path: Path,
         out_dir: Path, metrics_path: Path, params_path: Path) -> None:
    start = time.perf_counter()
    pipelines = named_specs(pipeline_items, "--pipeline")
    params = load_params(params_path)
    budget = params.section("certify", dataset)
    sigmas = list(dict.fromkeys(sigma_options or budget.sigmas))
    if any(not s > 0 for s in sigmas):
        raise click.BadParameter(f"{sigmas}: every sigma must be positive", param_hint="--sigma")
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    models = {}
    for name, spec in pipelines.items():   # every checkpoint is checked before hours of sampling
        model, clf_info, ae_info = load_pipeline(spec, device)
        for info in (clf_info, ae_info):
            if info is not None and info["dataset"] != dataset:
                raise AAAError(f"--pipeline {name}={spec}: holds a {info['dataset']} {info['kind']}, "
                               f"expected a {dataset} one")
        models[name] = (spec, model.eval(), clf_info, ae_info)
    n_test = len(data["x_test"])
    x, y = test_subset(data["x_test"], data["y_test"], budget.subset, params.seed)
    indices = test_order(n_test, params.seed)[: len(x)]
    noise_seed = attack_seed(params.seed, "certify")
    click.echo(f"{dataset}: {len(x)} test images, {len(models)} pipeline(s), sigma "
               f"{', '.join(f'{s:g}' for s in sigmas)}, n0 {budget.n0}, n {budget.n}, alpha {budget.alpha}")
    results = {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for name, (spec, model, clf_info, ae_info) in models.items():
            per_sigma = {}
            for sigma in sigmas:
                records = certify_dataset(model, x, y, sigma, n0=budget.n0, n=budget.n, alpha=budget.alpha,
                                          batch_size=budget.batch_size, seed=noise_seed, indices=indices,
                                          desc=f"{name} sigma {sigma:g}")
                write_tsv(records, staging / tsv_name(name, sigma))
                summary = summarize(records, RADII)
                per_sigma[f"{sigma:g}"] = {"sigma": sigma, "tsv": str(out_dir / tsv_name(name, sigma)), **summary}
                click.echo(f"  {name} sigma {sigma:g}: certified accuracy "
                           + ", ".join(f"r={row['radius']:g} {100 * row['accuracy']:.1f}%"
                                       for row in summary["certified_accuracy"])
                           + f"; abstained {100 * summary['abstention_rate']:.1f}%, "
                             f"{summary['examples_per_second']:.2f} images/s")
            results[name] = {"spec": spec, "classifier_arch": clf_info["arch"],
                             "classifier_mode": clf_info["meta"].get("mode"),
                             "ae_loss": ae_info["meta"].get("loss") if ae_info else None, "sigmas": per_sigma}
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    metrics = {"dataset": dataset, "label": data["label"], "data_source": data["source"],
               "method": "randomized smoothing, CERTIFY of Cohen, Rosenfeld and Kolter (2019); L2 radii in pixel units",
               "settings": {"n0": budget.n0, "n": budget.n, "alpha": budget.alpha, "batch_size": budget.batch_size,
                            "sigmas": sigmas, "radii": list(RADII)},
               "examples": len(x), "subset": describe_subset(n_test, budget.subset, params.seed),
               "seed": params.seed, "noise_seed": noise_seed,
               "noise_seeds": "numpy SeedSequence([noise_seed, test index]) per example (aaa_core.evaluation.certify)",
               "pipelines": results, "runtime": describe_runtime(device), "seconds": None}
    write_metrics(metrics, metrics_path, start)


if __name__ == "__main__":
    run(main)
