"""evaluate: natural and PGD robust accuracy of one pipeline (classifier alone, or AE + classifier), by
``aaa_core.protocols.evaluate_pipeline``, with the sanity checks that fail the stage (writing nothing) instead
of reporting an untrustworthy number; and, for an AE pipeline, a few images for the reconstruction figure."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import torch

from aaa_core import distributed
from aaa_core.attacks import pgd
from aaa_core.checkpoints import load_model, save_torch
from aaa_core.config import load_params
from aaa_core.data import describe_subset, test_order
from aaa_core.models import Defended
from aaa_core.protocols import evaluate_pipeline
from aaa_core.runtime import describe_runtime, generator as make_generator, load_prepared, resolve_device, seed_everything
from stages._common import enforce_checks, write_metrics
from stages._cli import run

N_FIGURE = 8


@click.command()
@click.option("--dataset", required=True)
@click.option("--classifier", "classifier_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True)
@click.option("--ae", "ae_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="AAA autoencoder put in front of the classifier; omit to evaluate the classifier alone.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--examples", "examples_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save a few clean / adversarial / reconstructed images for the figure.")
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, classifier_path: Path, ae_path: Path | None, data_path: Path, metrics_path: Path,
         examples_path: Path | None, params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    distributed.relaunch(params.devices, "stages.evaluate")   # devices > 1: every attack sharded over processes
    budget, threat = params.section("evaluate", dataset), params.attack(dataset)
    seed_everything(params.seed)
    device = distributed.init(resolve_device(params.device))
    data = load_prepared(data_path, device)
    classifier, clf_info = load_model(classifier_path, kind="classifier", device=device)
    ae, ae_info = load_model(ae_path, kind="ae", device=device) if ae_path else (None, None)
    model = Defended(ae, classifier).eval() if ae is not None else classifier.eval()
    steps = sorted(threat.eval_steps)
    # the test set in the seeded random order every pipeline shares: the subset is its first images
    order = test_order(len(data["x_test"]), params.seed).to(device)
    report = evaluate_pipeline(model, data["x_test"][order], data["y_test"][order], subset=budget.subset, eps=threat.eps,
                               alpha=threat.alpha, steps=steps, restarts=budget.restarts,
                               sanity_eps=budget.sanity_eps, sanity_alpha=budget.sanity_alpha,
                               sanity_steps=budget.sanity_steps, sanity_subset=budget.sanity_subset,
                               sanity_max_acc=budget.sanity_max_acc, seed=params.seed,
                               transfer_source=classifier if ae is not None else None,
                               transfer_tolerance=budget.transfer_tolerance, source_name=str(classifier_path))
    # Every rank holds the same gathered report: rank 0 alone prints and writes. A failed sanity check fails
    # every rank, after the group has ended cleanly; rank 0 gives the one-line message, the others exit quietly.
    main_rank, passed = distributed.is_main(), all(c.passed for c in report.checks)
    if not main_rank or not passed:
        distributed.finish()
    if not main_rank:
        sys.exit(0 if passed else 1)
    click.echo(f"natural {report.natural_full:.4f} (full test set), on {report.examples}: natural "
               f"{report.natural:.4f}, " + ", ".join(f"{k} {v:.4f}" for k, v in report.robust_accuracy().items()))
    constant = report.sanity["constant_output"]
    if constant is not None:
        click.echo(f"DEGENERATE pipeline: class {constant['class']} for {constant['share']:.1%} of clean inputs")
    checks = report.checks
    metrics = {
        "dataset": dataset, "label": data["label"], "data_source": data["source"],
        "pipeline": {"ae": str(ae_path) if ae_path else None, "ae_loss": ae_info["meta"]["loss"] if ae_info else None,
                     "classifier": str(classifier_path), "classifier_arch": clf_info["arch"],
                     "classifier_kwargs": clf_info["arch_kwargs"], "ae_kwargs": ae_info["arch_kwargs"] if ae_info else None,
                     "classifier_mode": clf_info["meta"]["mode"]},
        **report.as_dict(), "examples": describe_subset(len(data["x_test"]), budget.subset, params.seed),
        "runtime": describe_runtime(device), "processes": distributed.world_size(),
    }
    enforce_checks(checks, metrics_path.stem)
    if examples_path is not None:
        # copies of the slices: a saved view would carry the whole test set's storage into the file
        xf, yf = data["x_test"][:N_FIGURE].clone(), data["y_test"][:N_FIGURE].clone()
        x_adv = pgd(model, xf, yf, eps=threat.eps, alpha=threat.alpha, steps=steps[0],
                    generator=make_generator(params.seed, device))
        with torch.no_grad():
            recon = ae(torch.cat([xf, x_adv])) if ae is not None else torch.cat([xf, x_adv])
            pred = model(x_adv).argmax(1)
        save_torch({"clean": xf.cpu(), "adversarial": x_adv.cpu(), "recon_clean": recon[:N_FIGURE].cpu(),
                    "recon_adversarial": recon[N_FIGURE:].cpu(), "labels": yf.cpu(), "pred_adversarial": pred.cpu(),
                    "ae_loss": metrics["pipeline"]["ae_loss"], "classifier_arch": clf_info["arch"],
                    "label": data["label"], "eps": threat.eps,
                    "steps": steps[0]}, examples_path)
    write_metrics(metrics, metrics_path, start)
    distributed.finish()


if __name__ == "__main__":
    run(main)
