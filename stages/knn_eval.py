"""knn_eval: AAA with kNN latent reconstruction (paper Tables 9 and 10), by ``aaa_core.evaluation.knn.knn_protocol``.

On AE + kNN: non-adaptive PGD (the paper's), BPDA PGD, APGD-CE through the straight-through gradient with
``knn.<dataset>.apgd_restarts`` restarts (default 2; ``knn.<dataset>.apgd_steps``, default the largest PGD step
count) scored on the true kNN pipeline, Square (query-only, at ``knn.<dataset>.square_queries``) and their
per-example worst case. The plain AE (no kNN) gets the same attacks on the same examples, its own worst case,
and the exact paired McNemar test of the two worst cases. The stage fails, writing nothing, if BPDA is weaker
than the non-adaptive attack by more than the tolerance (the BPDA attack would be broken).
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.models.checkpoints import load_model
from aaa_core.config import load_params
from aaa_core.data import describe_subset, split_train_val, test_subset
from aaa_core.runtime import attack_seed
from aaa_core.stats import encode_flags
from aaa_core.evaluation.knn import KNNReport, LatentBank, encode_all, knn_protocol, library_name
from aaa_core.runtime import describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from stages._common import enforce_checks, mean, write_metrics
from stages._cli import input_file, output_file, params_file, run


def report_metrics(report: KNNReport) -> dict:
    """The measured part of the metrics JSON, from ``knn_protocol``'s report: natural and robust accuracies
    (``robust_accuracy``, laid out as the tables read it), per-example flags ('0'/'1' strings), what Square alone
    fooled, every attack per pipeline ("knn", "plain_ae": accuracy, flags, seeds, settings, seconds, restarts),
    both worst cases and their exact paired test."""
    return {
        "natural_accuracy": mean(report.natural), "plain_ae_natural_accuracy": mean(report.plain_natural),
        "robust_accuracy": report.robust_accuracy(),
        "natural_flags": encode_flags(report.natural), "plain_ae_natural_flags": encode_flags(report.plain_natural),
        "flags": {name: {f"pgd{k}": encode_flags(f) for k, f in by_steps.items()}
                  for name, by_steps in report.flags.items()},
        "square_flags": encode_flags(report.square) if report.square is not None else None,
        # examples Square fooled that survived every gradient attack on kNN: a masked straight-through gradient
        "square_only_fooled": report.square_only(),
        "attacks": {pipeline: {name: r.as_dict() for name, r in by_name.items()}
                    for pipeline, by_name in report.runs.items()},
        "worst_case": report.worst_case(),
        "paired_worst_case": report.paired_worst_case(),
    }


@click.command()
@click.option("--dataset", required=True)
@input_file("--ae", "ae_path", required=True)
@input_file("--classifier", "classifier_path",
              required=True)
@input_file("--data", "data_path", required=True)
@output_file("--metrics", "metrics_path")
@params_file()
def main(dataset: str, ae_path: Path, classifier_path: Path, data_path: Path, metrics_path: Path,
         params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    threat, split, knn = params.attack(dataset), params.section("split", dataset), params.section("knn", dataset)
    square_queries = knn.square_queries
    apgd_restarts = getattr(knn, "apgd_restarts", 2)
    apgd_steps = getattr(knn, "apgd_steps", 0) or None   # 0 or absent: the largest PGD step count
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    ae, ae_info = load_model(ae_path, kind="ae", device=device)
    classifier, clf_info = load_model(classifier_path, kind="classifier", device=device)
    # the bank: latents of the training split the AE was trained on (validation images held out)
    (x_train, _), _ = split_train_val(data["x_train"], data["y_train"], subset=0, val_size=split.val_size,
                                      seed=params.seed)
    bank_start = time.perf_counter()
    bank = LatentBank(encode_all(ae, x_train), k=knn.k)
    bank_seconds = time.perf_counter() - bank_start
    x, y = test_subset(data["x_test"], data["y_test"], knn.subset, params.seed)
    steps = sorted(threat.eval_steps)
    report = knn_protocol(ae, classifier, bank, x, y, eps=threat.eps, alpha=threat.alpha, steps=steps,
                          bpda_tolerance=knn.bpda_tolerance, seed=params.seed, square_queries=square_queries,
                          apgd_restarts=apgd_restarts, apgd_steps=apgd_steps)
    result = report.robust_accuracy()
    for name, accs in result.items():
        click.echo(f"{name:13s} " + ", ".join(f"{k} {v:.4f}" for k, v in accs.items()))
    natural = report.natural
    click.echo(f"natural {mean(natural):.4f}")
    for k, paired in report.paired_worst_case().items():
        click.echo(f"worst case {k}: kNN {mean(report.worst['knn'][int(k[3:])]):.4f}, plain AE "
                   f"{mean(report.worst['plain_ae'][int(k[3:])]):.4f} (McNemar p = {paired['p_value']:.3g}; "
                   f"{paired['knn_only']} vs {paired['plain_ae_only']} discordant)")
    checks = report.checks
    metrics = {
        "dataset": dataset, "label": data["label"], "data_source": data["source"],
        "pipeline": {"ae": str(ae_path), "ae_loss": ae_info["meta"]["loss"], "ae_kwargs": ae_info["arch_kwargs"],
                     "classifier": str(classifier_path), "classifier_arch": clf_info["arch"],
                     "classifier_kwargs": clf_info["arch_kwargs"], "classifier_mode": clf_info["meta"]["mode"],
                     "knn": {"k": knn.k, "bank_size": len(bank.latents), "latent_dim": bank.latents.shape[1],
                             "search": "exact, L2, float32"}},
        "examples": describe_subset(len(data["x_test"]), knn.subset, params.seed),
        **report_metrics(report),
        "attack": {"norm": "linf", "eps": threat.eps, "alpha": threat.alpha, "steps": steps, "restarts": 1,
                   "random_start": True, "loss": "ce", "examples": len(x), "stage_seed": params.seed,
                   "seeds": report.seeds(),
                   "precision": "float32",
                   "non_adaptive": "PGD on AE + classifier without kNN, final iterate, classified with kNN",
                   "bpda": "PGD with the straight-through gradient through the kNN step, scored on the true "
                           "pipeline; robust = never fooled at any iterate",
                   "square": {"queries": square_queries, "restarts": 1, "p_init": 0.8, "loss": "margin",
                              "library": library_name(), "seed": attack_seed(params.seed, "knn-square"),
                              "on": "the true kNN pipeline (no gradient needed)"} if square_queries > 0 else None,
                   "apgd_bpda": ({**report.runs["knn"]["apgd_bpda"].settings,
                                  "seeds": report.runs["knn"]["apgd_bpda"].seeds}
                                 if "apgd_bpda" in report.runs["knn"] else None),
                   "worst_case": "per example and PGD step count: robust under every attack that ran on the "
                                 "pipeline (kNN: " + ", ".join(report.runs["knn"]) + "; plain AE: "
                                 + ", ".join(report.runs["plain_ae"]) + ")",
                   "plain_ae_same_examples": "the AE without kNN, scored on the non-adaptive attack's adversarial "
                                             "examples (final iterate): kNN and plain AE on the same examples",
                   "plain_ae": "the AE without kNN under the same attacks on the same examples: the non-adaptive "
                               "attack's examples, its own PGD, APGD-CE with the same steps and restarts, Square "
                               "at the same query budget (each from its own seed)",
                   "seed_names": "attack_seed(stage_seed, 'knn-<name>'); batch b > 0 of a library attack: "
                                 "attack_seed(stage_seed, 'knn-<name>/batch<b>')"},
        "timing": {"bank_seconds": round(bank_seconds, 1),
                   **{f"{k}_seconds": round(v, 1) for k, v in report.seconds.items()}},
        "checks": [c.as_dict() for c in checks],
        "runtime": describe_runtime(device),
    }
    enforce_checks(checks, metrics_path.stem)
    write_metrics(metrics, metrics_path, start)


if __name__ == "__main__":
    run(main)
