"""robustness: the adaptive-attack suite on one pipeline (classifier alone, or AE + classifier).

Fails, writing nothing, when a sanity check fails: above all when a query-only or transfer attack beats
every white-box attack, the signature of masked gradients.
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from aaa_core.checkpoints import load_model
from aaa_core.config import load_params
from aaa_core.data import describe_subset, test_subset
from aaa_core.models import Defended
from aaa_core.runtime import describe_runtime, load_prepared, resolve_device, seed_everything
from aaa_core.suite import SuiteConfig, evaluate_suite, split_checks
from stages._common import enforce_checks, write_metrics
from stages._cli import run


def load_pipeline(spec: str, device: torch.device):
    """'models/mnist/dnn.pt' or 'models/mnist/ae_mse.pt+models/mnist/dnn.pt' (AE + classifier)."""
    parts = spec.split("+")
    classifier, clf_info = load_model(parts[-1], kind="classifier", device=device)
    if len(parts) == 1:
        return classifier, clf_info, None
    ae, ae_info = load_model(parts[0], kind="ae", device=device)
    return Defended(ae, classifier).eval(), clf_info, ae_info


@click.command()
@click.option("--dataset", required=True)
@click.option("--name", required=True, help="The pipeline's name in the report, e.g. ae_ce_mse-dnn.")
@click.option("--pipeline", "pipeline_spec", required=True,
              help="CLASSIFIER.pt, or AE.pt+CLASSIFIER.pt for a defended pipeline.")
@click.option("--transfer", "transfers", multiple=True,
              help="NAME=SPEC: a model (same syntax as --pipeline) on which a transfer attack is crafted.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, name: str, pipeline_spec: str, transfers: tuple[str, ...], data_path: Path,
         metrics_path: Path, params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    threat, budget = params.attack(dataset), params.section("suite", dataset)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    model, clf_info, ae_info = load_pipeline(pipeline_spec, device)
    sources = {}
    for item in transfers:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected NAME=SPEC", param_hint="--transfer")
        source_name, spec = item.split("=", 1)
        sources[source_name] = load_pipeline(spec, device)[0]
    cfg = SuiteConfig(eps=threat.eps, paper_alpha=threat.alpha, paper_steps=threat.eval_steps,
                      pgd_steps=budget.pgd_steps, pgd_alpha=budget.pgd_alpha, pgd_restarts=budget.pgd_restarts,
                      apgd_steps=budget.apgd_steps, apgdt_targets=budget.apgdt_targets,
                      square_queries=budget.square_queries, transfer_steps=budget.transfer_steps,
                      curve_eps=budget.curve_eps, curve_steps=budget.curve_steps,
                      max_acc_at_high_eps=budget.max_acc_at_high_eps, masking_tolerance=budget.masking_tolerance,
                      max_masking_gap=budget.max_masking_gap, seed=params.seed)
    x, y = test_subset(data["x_test"], data["y_test"], budget.subset, params.seed)
    click.echo(f"{name}: {len(x)} test images, eps {cfg.eps}")
    report = evaluate_suite(model, x, y, cfg, transfer_sources=sources, log=click.echo)
    click.echo(f"  {'worst case':28s} {100 * report.worst:6.2f}%  (natural {100 * report.natural:.2f}%, "
               f"uniform noise {100 * report.noise:.2f}%)")
    metrics = {"dataset": dataset, "label": data["label"], "data_source": data["source"], "name": name,
               "pipeline": {"spec": pipeline_spec, "classifier_arch": clf_info["arch"],
                            "classifier_kwargs": clf_info["arch_kwargs"],
                            "classifier_mode": clf_info["meta"]["mode"],
                            "ae_loss": ae_info["meta"]["loss"] if ae_info else None},
               "examples": len(x), "subset": describe_subset(len(data["x_test"]), budget.subset, params.seed),
               "seed": params.seed, "precision": "float32", **report.as_dict(),
               "runtime": describe_runtime(device),
               "seconds": None}
    acknowledged = name in budget.acknowledged_masking
    enforced, masking = split_checks(report.checks, acknowledged)
    metrics["masked_gradients"] = {"detected": bool(masking), "acknowledged": acknowledged,
                                   "details": [c.detail for c in masking]}
    if masking and acknowledged:
        click.echo(f"MASKED GRADIENTS (acknowledged in params suite.{dataset}.acknowledged_masking, scale {params.scale}): "
                   + "; ".join(c.detail for c in masking))
    enforce_checks(enforced, name)
    write_metrics(metrics, metrics_path, start)


if __name__ == "__main__":
    run(main)
