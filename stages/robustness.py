"""robustness: the adaptive-attack suite on pipelines of one dataset (a classifier alone, or AE + classifier).

One pipeline (``--name --pipeline --metrics``) or several in one process (``--run NAME=SPEC`` repeated, with
``--metrics-dir``); the ``--transfer`` sources are shared, each left out for a pipeline that is built on it.
Fails, writing nothing, when a sanity check fails: above all when a query-only or transfer attack beats every
white-box attack, the signature of masked gradients.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.models.checkpoints import load_pipeline
from aaa_core.io import write_json
from aaa_core.config import load_params
from aaa_core.data import describe_subset, test_subset
from aaa_core.runtime import describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from aaa_core.evaluation.suite import evaluate_suite, split_checks, suite_config
from stages._common import enforce_checks, named_specs
from stages._cli import input_file, params_file, run


@click.command()
@click.option("--dataset", required=True)
@click.option("--name", default=None, help="One pipeline: its name in the report, e.g. ae_ce_mse-dnn.")
@click.option("--pipeline", "pipeline_spec", default=None,
              help="One pipeline: CLASSIFIER.pt, or AE.pt+CLASSIFIER.pt for a defended pipeline.")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--run", "runs", multiple=True, help="NAME=SPEC: a pipeline (same syntax as --pipeline); repeatable.")
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --run: writes <NAME>.json under it.")
@click.option("--transfer", "transfers", multiple=True,
              help="NAME=SPEC: a model (same syntax as --pipeline) on which a transfer attack is crafted.")
@input_file("--data", "data_path", required=True)
@params_file()
def main(dataset: str, name: str | None, pipeline_spec: str | None, metrics_path: Path | None,
         runs: tuple[str, ...], metrics_dir: Path | None, transfers: tuple[str, ...], data_path: Path,
         params_path: Path) -> None:
    start = time.perf_counter()
    if runs and metrics_dir is not None and not (name or pipeline_spec or metrics_path):
        pipelines = {n: (spec, metrics_dir / f"{n}.json") for n, spec in named_specs(runs, "--run").items()}
    elif name and pipeline_spec and metrics_path and not runs:
        pipelines = {name: (pipeline_spec, metrics_path)}
    else:
        raise click.UsageError("give either --name --pipeline --metrics (one pipeline) or --run NAME=SPEC ... "
                               "--metrics-dir (several)")
    params = load_params(params_path)
    budget = params.section("suite", dataset)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    transfer_specs = named_specs(transfers, "--transfer")
    sources = {n: load_pipeline(spec, device)[0] for n, spec in transfer_specs.items()}
    cfg = suite_config(params, dataset)
    x, y = test_subset(data["x_test"], data["y_test"], budget.subset, params.seed)
    records, failures = [], []
    mark = start   # each record times its share of the stage: the first includes loading, so they sum to it
    for pname, (spec, out) in pipelines.items():
        model, clf_info, ae_info = load_pipeline(spec, device)
        # the pipeline itself as a source would be a white-box attack under another name
        own = {n: m for n, m in sources.items() if transfer_specs[n] != spec}
        click.echo(f"{pname}: {len(x)} test images, eps {cfg.eps}")
        report = evaluate_suite(model, x, y, cfg, transfer_sources=own, log=click.echo)
        click.echo(f"  {'worst case':28s} {100 * report.worst:6.2f}%  (natural {100 * report.natural:.2f}%, "
                   f"uniform noise {100 * report.noise:.2f}%)")
        metrics = {"dataset": dataset, "label": data["label"], "data_source": data["source"], "name": pname,
                   "pipeline": {"spec": spec, "classifier_arch": clf_info["arch"],
                                "classifier_kwargs": clf_info["arch_kwargs"],
                                "classifier_mode": clf_info["meta"]["mode"],
                                "ae_loss": ae_info["meta"]["loss"] if ae_info else None},
                   "transfer_sources": {n: transfer_specs[n] for n in own},
                   "examples": len(x), "subset": describe_subset(len(data["x_test"]), budget.subset, params.seed),
                   "seed": params.seed, "precision": "float32", **report.as_dict(),
                   "runtime": describe_runtime(device)}
        acknowledged = pname in budget.acknowledged_masking
        enforced, masking = split_checks(report.checks, acknowledged)
        metrics["masked_gradients"] = {"detected": bool(masking), "acknowledged": acknowledged,
                                       "details": [c.detail for c in masking]}
        if masking and acknowledged:
            click.echo(f"MASKED GRADIENTS (acknowledged in params suite.{dataset}.acknowledged_masking, scale "
                       f"{params.scale}): " + "; ".join(c.detail for c in masking))
        metrics["seconds"] = round(time.perf_counter() - mark, 1)
        mark = time.perf_counter()
        failures.append((pname, enforced))
        records.append((out, metrics))
    for pname, enforced in failures:   # every pipeline's checks before any file is written
        enforce_checks(enforced, pname)
    for out, metrics in records:
        write_json(metrics, out)


if __name__ == "__main__":
    run(main)
