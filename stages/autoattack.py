"""autoattack: AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square 5,000) on one pipeline.

At the published settings (100 iterations, 9 target classes, 5,000 queries, one restart each), whatever
the scale, so its number compares with published AutoAttack figures; only the number of test images
(``autoattack_subset`` in comparison.yaml, the first test images) follows the scale.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.evaluation.autoattack import STANDARD_SQUARE_QUERIES, STANDARD_STEPS, autoattack_standard
from aaa_core.config import load_comparison
from aaa_core.config import load_params
from aaa_core.data import describe_subset, test_subset
from aaa_core.runtime import describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from aaa_core.models.checkpoints import load_pipeline
from stages._common import write_metrics
from stages._cli import input_file, output_file, params_file, run


@click.command()
@click.option("--dataset", required=True)
@click.option("--name", required=True, help="The pipeline's name in the report, e.g. ae_ce_mse-dnn.")
@click.option("--pipeline", "pipeline_spec", required=True,
              help="CLASSIFIER.pt, or AE.pt+CLASSIFIER.pt for a defended pipeline.")
@input_file("--data", "data_path", required=True)
@output_file("--metrics", "metrics_path")
@params_file()
@params_file("--comparison", "comparison_path", "comparison.yaml")
def main(dataset: str, name: str, pipeline_spec: str, data_path: Path, metrics_path: Path, params_path: Path,
         comparison_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    cfg = load_comparison(comparison_path, dataset, params.scale)
    threat = params.attack(dataset)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    model, clf_info, ae_info = load_pipeline(pipeline_spec, device)
    x, y = test_subset(data["x_test"], data["y_test"], cfg.autoattack_subset, params.seed)
    steps, queries = cfg.autoattack_steps, cfg.autoattack_square_queries
    version = "standard" if (steps, queries) == (STANDARD_STEPS, STANDARD_SQUARE_QUERIES) else "reduced"
    click.echo(f"{name}: AutoAttack {version} ({steps} iterations, Square {queries} queries) on {len(x)} test "
               f"images, eps {threat.eps}")
    report = autoattack_standard(model, x, y, threat.eps, seed=params.seed, steps=steps, square_queries=queries,
                                 log=click.echo)
    click.echo(f"  AutoAttack {100 * report.accuracy:.2f}%  (natural {100 * report.natural.float().mean():.2f}%)")
    metrics = {"dataset": dataset, "label": data["label"], "data_source": data["source"], "name": name,
               "pipeline": {"spec": pipeline_spec, "classifier_arch": clf_info["arch"],
                            "classifier_kwargs": clf_info["arch_kwargs"],
                            "classifier_mode": clf_info["meta"]["mode"],
                            "ae_loss": ae_info["meta"]["loss"] if ae_info else None,
                            "training_seed": (ae_info or clf_info)["meta"].get("description", {}).get("train", {}).get("seed")},
               "attack": {"name": "AutoAttack", "version": version, "norm": "linf", "eps": threat.eps,
                          "seed": params.seed, "precision": "float32",
                          "subset": describe_subset(len(data["x_test"]), cfg.autoattack_subset, params.seed)},
               **report.as_dict(), "runtime": describe_runtime(device)}
    write_metrics(metrics, metrics_path, start)


if __name__ == "__main__":
    run(main)
