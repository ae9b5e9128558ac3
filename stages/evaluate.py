"""evaluate: natural and PGD robust accuracy of pipelines (a classifier alone, or AE + classifier), by
``aaa_core.evaluation.protocols.evaluate_pipeline``, with the sanity checks that fail the stage (writing nothing) instead
of reporting an untrustworthy number; and, for an AE pipeline, a few images for the reconstruction figure.

One pipeline (``--classifier [--ae] --metrics``), or every pipeline of a dataset in one process
(``--models-dir``): the classifiers alone (``--alone``), the headline AE (params ``loss``) and every AE of params
``other_losses`` in front of each of ``--targets``, and with ``--ensemble`` the ensemble AE in front of each
target; ``--ensemble-alone`` classifiers (Table 8's Madry baselines) go to ``ensemble/`` beside it. Every
metrics file is written only after every pipeline passed its checks.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from aaa_core import distributed
from aaa_core.attacks import pgd
from aaa_core.models.checkpoints import load_model
from aaa_core.io import save_torch, write_json
from aaa_core.config import load_params
from aaa_core.data import describe_subset, test_order
from aaa_core.models import Defended
from aaa_core.evaluation.protocols import evaluate_pipeline
from aaa_core.stats import encode_flags
from aaa_core.evaluation.suite import run_suite, suite_config
from aaa_core.runtime import describe_runtime, generator as make_generator, resolve_device, seed_everything
from aaa_core.data import load_prepared
from stages._common import enforce_checks
from stages._cli import input_file, params_file, run

N_FIGURE = 8


@dataclass
class Job:
    """One pipeline to evaluate and where its records go."""
    classifier: Path
    ae: Path | None
    metrics: Path
    examples: Path | None


def plan_dataset(models_dir: Path, metrics_dir: Path, examples_dir: Path | None, alone: list[str],
                 targets: list[str], ae_losses: list[str], ensemble: bool, ensemble_alone: list[str]) -> list[Job]:
    """Every pipeline of one dataset: classifiers alone and AEs (``ae_<loss>.pt``, ``ae_ensemble.pt``) in front
    of each target classifier; records under ``evaluate/`` and ``ensemble/`` of ``metrics_dir``."""
    jobs = [Job(models_dir / f"{c}.pt", None, metrics_dir / "evaluate" / f"{c}.json", None) for c in alone]
    for loss in ae_losses:
        jobs += [Job(models_dir / f"{t}.pt", models_dir / f"ae_{loss}.pt",
                     metrics_dir / "evaluate" / f"ae_{loss}-{t}.json",
                     examples_dir / f"ae_{loss}-{t}.pt" if examples_dir else None) for t in targets]
    jobs += [Job(models_dir / f"{c}.pt", None, metrics_dir / "ensemble" / f"{c}.json", None) for c in ensemble_alone]
    if ensemble:
        jobs += [Job(models_dir / f"{t}.pt", models_dir / "ae_ensemble.pt",
                     metrics_dir / "ensemble" / f"ae_ensemble-{t}.json", None) for t in targets]
    missing = sorted({str(p) for j in jobs for p in (j.classifier, j.ae) if p is not None and not p.is_file()})
    if missing:
        raise click.BadParameter(f"no such model file(s): {', '.join(missing)}", param_hint="--models-dir")
    return jobs


def names(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


@click.command()
@click.option("--dataset", required=True)
@input_file("--classifier", "classifier_path",
              default=None, help="One pipeline: the classifier (with --metrics).")
@input_file("--ae", "ae_path", default=None,
              help="One pipeline: the AAA autoencoder put in front of the classifier; omit for the classifier alone.")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--examples", "examples_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="One pipeline: where to save a few clean / adversarial / reconstructed images for the figure.")
@click.option("--models-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Every pipeline of the dataset: the folder of its models (with --metrics-dir).")
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Writes evaluate/<pipeline>.json and ensemble/<pipeline>.json under it.")
@click.option("--examples-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--alone", default="", help="Classifiers evaluated alone, e.g. 'dnn dnn_adv fc'.")
@click.option("--targets", default="", help="Classifiers every AE is put in front of, e.g. 'dnn fc'.")
@click.option("--ensemble/--no-ensemble", default=False, help="Also the ensemble AE (ae_ensemble.pt).")
@click.option("--ensemble-alone", default="", help="Classifiers evaluated alone for Table 8 (ensemble/).")
@input_file("--data", "data_path", required=True)
@params_file()
def main(dataset: str, classifier_path: Path | None, ae_path: Path | None, metrics_path: Path | None,
         examples_path: Path | None, models_dir: Path | None, metrics_dir: Path | None, examples_dir: Path | None,
         alone: str, targets: str, ensemble: bool, ensemble_alone: str, data_path: Path, params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    if (classifier_path is None) == (models_dir is None) or (models_dir is not None and metrics_dir is None) \
            or (classifier_path is not None and metrics_path is None):
        raise click.UsageError("give either --classifier [--ae] --metrics (one pipeline) or --models-dir "
                               "--metrics-dir (every pipeline of the dataset)")
    if models_dir is not None:
        jobs = plan_dataset(models_dir, metrics_dir, examples_dir, names(alone), names(targets),
                            [params.loss, *params.other_losses], ensemble, names(ensemble_alone))
    else:
        jobs = [Job(classifier_path, ae_path, metrics_path, examples_path)]
    distributed.relaunch(params.devices, "stages.evaluate")   # devices > 1: every attack sharded over processes
    budget, threat = params.section("evaluate", dataset), params.attack(dataset)
    seed_everything(params.seed)
    device = distributed.init(resolve_device(params.device))
    data = load_prepared(data_path, device)
    # the test set in the seeded random order every pipeline shares: the subset is its first images
    order = test_order(len(data["x_test"]), params.seed).to(device)
    x_all, y_all = data["x_test"][order], data["y_test"][order]
    steps = sorted(threat.eval_steps)
    records, failed = [], []
    mark = start   # each record times its share of the stage: the first includes loading, so they sum to it
    for job in jobs:
        classifier, clf_info = load_model(job.classifier, kind="classifier", device=device)
        ae, ae_info = load_model(job.ae, kind="ae", device=device) if job.ae else (None, None)
        model = Defended(ae, classifier).eval() if ae is not None else classifier.eval()
        report = evaluate_pipeline(model, x_all, y_all, subset=budget.subset, eps=threat.eps,
                                   alpha=threat.alpha, steps=steps, restarts=budget.restarts,
                                   sanity_eps=budget.sanity_eps, sanity_alpha=budget.sanity_alpha,
                                   sanity_steps=budget.sanity_steps, sanity_subset=budget.sanity_subset,
                                   sanity_max_acc=budget.sanity_max_acc, seed=params.seed,
                                   transfer_source=classifier if ae is not None else None,
                                   transfer_tolerance=budget.transfer_tolerance, source_name=str(job.classifier))
        if not all(c.passed for c in report.checks):
            failed.append((job, report.checks))
        flat = flat_check(model, x_all, y_all, report, budget, params, dataset)
        if not distributed.is_main():
            continue
        name = job.metrics.stem
        click.echo(f"{name}: natural {report.natural_full:.4f} (full test set), on {report.examples}: natural "
                   f"{report.natural:.4f}, " + ", ".join(f"{k} {v:.4f}" for k, v in report.robust_accuracy().items()))
        constant = report.sanity["constant_output"]
        if constant is not None:
            click.echo(f"DEGENERATE pipeline {name}: class {constant['class']} for {constant['share']:.1%} of clean inputs")
        metrics = {
            "dataset": dataset, "label": data["label"], "data_source": data["source"],
            "pipeline": {"ae": str(job.ae) if job.ae else None, "ae_loss": ae_info["meta"]["loss"] if ae_info else None,
                         "classifier": str(job.classifier), "classifier_arch": clf_info["arch"],
                         "classifier_kwargs": clf_info["arch_kwargs"],
                         "ae_kwargs": ae_info["arch_kwargs"] if ae_info else None,
                         "classifier_mode": clf_info["meta"]["mode"]},
            **report.as_dict(), "examples": describe_subset(len(data["x_test"]), budget.subset, params.seed),
            "runtime": describe_runtime(device), "processes": distributed.world_size(), "flat_check": flat,
        }
        if flat.get("triggered"):
            click.echo(f"  flat over steps: margin PGD and Square -> worst {flat['worst_case_accuracy']:.4f}")
        figure = None
        if job.examples is not None and ae is not None:
            figure = figure_examples(model, ae, data, threat, steps[0], params.seed, device, metrics, clf_info)
        metrics["seconds"] = round(time.perf_counter() - mark, 1)
        mark = time.perf_counter()
        records.append((job, metrics, figure))
    # every rank holds the same gathered reports: a failed check fails every rank, after the group ended cleanly;
    # rank 0 gives the one-line message and alone writes, and only when every pipeline passed
    main_rank = distributed.is_main()
    distributed.finish()
    if not main_rank:
        sys.exit(1 if failed else 0)
    for job, checks in failed:
        enforce_checks(checks, job.metrics.stem)
    for job, metrics, figure in records:
        if figure is not None:
            save_torch(figure, job.examples)
        write_json(metrics, job.metrics)
    if len(records) > 1:
        click.echo(f"{len(records)} pipelines in {time.perf_counter() - start:.1f} s")


def flat_check(model, x_all, y_all, report, budget, params, dataset: str) -> dict:
    """A pipeline whose PGD accuracy is flat over the protocol's step counts (the longest run fools at most one
    example more than the shortest) while at least ``flat_min_acc`` may owe it to a masked cross-entropy
    gradient: it is also attacked on the same examples with the suite's margin-loss PGD and with Square at
    ``flat_square_queries`` (each its own seed); the record holds their flags and the per-example worst case
    with the protocol's PGD. Out: {"flat", "triggered", and where triggered "attacks", "worst_case_*",
    "gap" (PGD accuracy minus the worst case)}."""
    steps = sorted(report.robust)
    if len(steps) < 2:
        return {"flat": None, "triggered": False, "why": "one step count: flatness is not measurable"}
    first, last = report.robust[steps[0]], report.robust[steps[-1]]
    n = len(last)
    flat = bool(last.float().sum() >= first.float().sum() - 1)
    acc = last.float().mean().item()
    if not flat or acc < budget.flat_min_acc:
        return {"flat": flat, "triggered": False}
    cfg = dataclasses.replace(suite_config(params, dataset), square_queries=budget.flat_square_queries,
                              pgd_restarts=1)
    margin = f"pgd{cfg.pgd_steps}-margin-x1"
    results = run_suite(model, x_all[:n], y_all[:n], cfg, attacks=[margin, "square"], log=click.echo)
    worst = last.clone()
    for r in results:
        worst &= r.flags.to(worst.device)
    return {"flat": True, "triggered": True, "pgd_steps": steps[-1], "min_acc": budget.flat_min_acc,
            "attacks": [r.as_dict() for r in results], "worst_case_accuracy": worst.float().mean().item(),
            "worst_case_flags": encode_flags(worst), "gap": acc - worst.float().mean().item()}


def figure_examples(model, ae, data, threat, steps, seed, device, metrics, clf_info) -> dict:
    """A few clean, adversarial and reconstructed test images (copies of the slices: a saved view would carry the
    whole test set's storage into the file)."""
    xf, yf = data["x_test"][:N_FIGURE].clone(), data["y_test"][:N_FIGURE].clone()
    x_adv = pgd(model, xf, yf, eps=threat.eps, alpha=threat.alpha, steps=steps, generator=make_generator(seed, device))
    with torch.no_grad():
        recon = ae(torch.cat([xf, x_adv]))
        pred = model(x_adv).argmax(1)
    return {"clean": xf.cpu(), "adversarial": x_adv.cpu(), "recon_clean": recon[:N_FIGURE].cpu(),
            "recon_adversarial": recon[N_FIGURE:].cpu(), "labels": yf.cpu(), "pred_adversarial": pred.cpu(),
            "ae_loss": metrics["pipeline"]["ae_loss"], "classifier_arch": clf_info["arch"],
            "label": data["label"], "eps": threat.eps, "steps": steps}


if __name__ == "__main__":
    run(main)
