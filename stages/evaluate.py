"""evaluate: natural and PGD robust accuracy of one pipeline (classifier alone, or AE + classifier),
with the sanity checks that fail the stage instead of reporting an untrustworthy number."""
from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from aaa_core.attacks import PGDConfig, pgd
from aaa_core.checkpoints import load_model, save_torch
from aaa_core.config import load_params
from aaa_core.data import test_subset
from aaa_core.evaluate import (
    check_high_eps,
    check_noise_weaker,
    check_steps_monotone,
    check_whitebox_beats_transfer,
    constant_output,
    noise_flags,
    predictions,
    robust_flags,
    transfer_flags,
)
from aaa_core.models import Defended
from aaa_core.runtime import describe_runtime, generator as make_generator, load_prepared, resolve_device, seed_everything
from stages._common import enforce_checks, mean, write_metrics
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
    budget, threat = params.section("evaluate", dataset), params.attack(dataset)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    classifier, clf_info = load_model(classifier_path, kind="classifier", device=device)
    ae, ae_info = load_model(ae_path, kind="ae", device=device) if ae_path else (None, None)
    model = Defended(ae, classifier).eval() if ae is not None else classifier.eval()
    x, y = test_subset(data["x_test"], data["y_test"], budget.subset)
    steps = sorted(threat.eval_steps)
    attack = PGDConfig(eps=threat.eps, alpha=threat.alpha, steps=steps[-1], restarts=budget.restarts)

    natural_pred = predictions(model, data["x_test"])
    natural_flags = natural_pred == data["y_test"]
    natural_full, natural = mean(natural_flags), mean(natural_flags[:len(x)])   # x: the first test images
    flags = robust_flags(model, x, y, attack, record_at=steps, seed=params.seed)
    robust = {f"pgd{k}": mean(flags[k]) for k in steps}
    click.echo(f"natural {natural_full:.4f} (full test set), on {len(x)}: natural {natural:.4f}, "
               + ", ".join(f"{k} {v:.4f}" for k, v in robust.items()))

    high = PGDConfig(eps=budget.sanity_eps, alpha=budget.sanity_alpha, steps=budget.sanity_steps)
    xs, ys = x[:budget.sanity_subset], y[:budget.sanity_subset]
    high_acc = mean(robust_flags(model, xs, ys, high, seed=params.seed)[high.steps])
    noise_acc = mean(noise_flags(model, x, y, threat.eps, seed=params.seed))
    constant = constant_output(natural_pred[:len(xs)], ys)   # xs: the first test images too
    if constant is not None:
        click.echo(f"DEGENERATE pipeline: class {constant['class']} for {constant['share']:.1%} of clean inputs")
    checks = [check_high_eps(high_acc, high.eps, budget.sanity_max_acc, constant),
              check_steps_monotone({k: mean(flags[k]) for k in steps}),
              check_noise_weaker(noise_acc, robust[f"pgd{steps[-1]}"])]
    transfer = None
    if ae is not None:
        # The same attack budget (first reported step count) crafted on the undefended classifier alone.
        source = PGDConfig(eps=threat.eps, alpha=threat.alpha, steps=steps[0])
        transfer = {"attack": {**source.describe(), "crafted_on": str(classifier_path)},
                    "accuracy": mean(transfer_flags(classifier, model, x, y, source, seed=params.seed))}
        checks.append(check_whitebox_beats_transfer(robust[f"pgd{steps[0]}"], transfer["accuracy"],
                                                    budget.transfer_tolerance))
    metrics = {
        "dataset": dataset, "label": data["label"], "data_source": data["source"],
        "pipeline": {"ae": str(ae_path) if ae_path else None, "ae_loss": ae_info["meta"]["loss"] if ae_info else None,
                     "classifier": str(classifier_path), "classifier_arch": clf_info["arch"],
                     "classifier_kwargs": clf_info["arch_kwargs"], "ae_kwargs": ae_info["arch_kwargs"] if ae_info else None,
                     "classifier_mode": clf_info["meta"]["mode"]},
        "natural_accuracy_full_test": natural_full, "natural_accuracy": natural, "robust_accuracy": robust,
        "attack": {**attack.describe(), "examples": len(x), "seed": params.seed, "precision": "float32",
                   "robust_means": "never misclassified at any iterate up to the step count, in every restart"},
        "transfer_attack": transfer,
        "runtime": describe_runtime(device),
        "sanity": {"high_eps": {**high.describe(), "examples": len(xs), "accuracy": high_acc},
                   "constant_output": constant,
                   "uniform_noise": {"eps": threat.eps, "accuracy": noise_acc},
                   "checks": [c.as_dict() for c in checks]},
    }
    enforce_checks(checks, metrics_path.stem)
    if examples_path is not None:
        xf, yf = data["x_test"][:N_FIGURE], data["y_test"][:N_FIGURE]
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


if __name__ == "__main__":
    run(main)
