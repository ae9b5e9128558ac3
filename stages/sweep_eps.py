"""sweep_eps: robust accuracy against eps for the headline AE pipeline and the baselines (a curve per model)."""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.models.checkpoints import load_model
from aaa_core.io import write_json
from aaa_core.config import load_params
from aaa_core.data import test_subset
from aaa_core.evaluation.flags import eps_sweep
from aaa_core.models import Defended
from aaa_core.runtime import describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from stages._cli import input_file, output_file, params_file, run


@click.command()
@click.option("--dataset", required=True)
@input_file("--ae", "ae_path", required=True,
              help="The headline AE (params.yaml: loss).")
@input_file("--classifier", "classifier_path",
              required=True, help="The natural classifier the AE protects.")
@click.option("--baseline", "baseline_paths", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Classifiers evaluated alone for comparison (natural, adversarially trained).")
@input_file("--data", "data_path", required=True)
@output_file("--metrics", "metrics_path")
@params_file()
def main(dataset: str, ae_path: Path, classifier_path: Path, baseline_paths: tuple[Path, ...], data_path: Path,
         metrics_path: Path, params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    budget = params.section("sweep", dataset)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    x, y = test_subset(data["x_test"], data["y_test"], budget.subset, params.seed)
    ae, ae_info = load_model(ae_path, kind="ae", device=device)
    classifier, clf_info = load_model(classifier_path, kind="classifier", device=device)
    models = {f"ae_{ae_info['meta']['loss']} + {clf_info['arch']}": Defended(ae, classifier).eval()}
    for path in baseline_paths:
        model, info = load_model(path, kind="classifier", device=device)
        models[f"{info['arch']} ({info['meta']['mode']})"] = model
    curves = {}
    for name, model in models.items():
        curves[name] = eps_sweep(model, x, y, budget.eps, steps=budget.steps, seed=params.seed)
        click.echo(f"{name}: " + ", ".join(f"{p['eps']:g}: {p['accuracy']:.3f}" for p in curves[name]))
    write_json({"dataset": dataset, "label": data["label"], "headline_loss": ae_info["meta"]["loss"],
                "examples": len(x), "seed": params.seed,
                "attack": {"norm": "linf", "steps": budget.steps, "alpha": "2.5 * eps / steps",
                           "restarts": 1, "random_start": True, "loss": "ce"},
                "curves": curves, "runtime": describe_runtime(device), "seconds": round(time.perf_counter() - start, 1)}, metrics_path)


if __name__ == "__main__":
    run(main)
