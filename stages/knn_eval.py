"""knn_eval: AAA with kNN latent reconstruction (paper Tables 9 and 10), attacked three ways.

(1) non-adaptive, the paper's protocol: PGD crafted on AE + classifier without the kNN step, then
    classified with it; (2) adaptive: PGD with the straight-through (BPDA) gradient through the kNN step;
(3) the per-example worst case of the two. The stage fails if the adaptive attack is weaker than the
non-adaptive one by more than the tolerance: that would mean the BPDA attack is broken.
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from aaa_core.attacks import PGDConfig, pgd_iterates
from aaa_core.checkpoints import load_model
from aaa_core.config import load_params
from aaa_core.data import split_train_val, test_subset
from aaa_core.evaluate import ROUNDING, Check, correct_flags, robust_flags
from aaa_core.knn import KNNDefended, LatentBank, encode_all
from aaa_core.models import Defended
from aaa_core.runtime import describe_runtime, generator as make_generator, load_prepared, resolve_device, seed_everything
from stages._common import enforce_checks, mean, write_metrics
from stages._cli import run


@click.command()
@click.option("--dataset", required=True)
@click.option("--ae", "ae_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--classifier", "classifier_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True)
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, ae_path: Path, classifier_path: Path, data_path: Path, metrics_path: Path,
         params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    threat, split, knn = params.attack(dataset), params.section("split", dataset), params.section("knn", dataset)
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
    target = KNNDefended(ae, classifier, bank).eval()
    straight = KNNDefended(ae, classifier, bank, bpda=True).eval()
    plain = Defended(ae, classifier).eval()
    x, y = test_subset(data["x_test"], data["y_test"], knn.subset)
    steps = sorted(threat.eval_steps)

    t = time.perf_counter()
    natural = correct_flags(target, x, y)
    natural_seconds = time.perf_counter() - t
    # one run gives every step count's final iterate (the same as separate runs: tests/test_attacks.py)
    iterates = [pgd_iterates(plain, xb, yb, eps=threat.eps, alpha=threat.alpha, at=steps,
                             generator=make_generator(params.seed, device))
                for xb, yb in zip(x.split(256), y.split(256))]
    non_adaptive = {k: correct_flags(target, torch.cat([it[k] for it in iterates]), y) for k in steps}
    cfg = PGDConfig(eps=threat.eps, alpha=threat.alpha, steps=steps[-1])
    adaptive = robust_flags(straight, x, y, cfg, record_at=steps, seed=params.seed)
    worst = {k: non_adaptive[k] & adaptive[k] for k in steps}
    result = {name: {f"pgd{k}": mean(flags[k]) for k in steps}
              for name, flags in (("non_adaptive", non_adaptive), ("bpda", adaptive), ("worst_case", worst))}
    for name, accs in result.items():
        click.echo(f"{name:13s} " + ", ".join(f"{k} {v:.4f}" for k, v in accs.items()))
    click.echo(f"natural {mean(natural):.4f}")
    allowed = knn.bpda_tolerance + ROUNDING
    checks = [Check("bpda_not_weaker_than_non_adaptive",
                    all(result["bpda"][f"pgd{k}"] <= result["non_adaptive"][f"pgd{k}"] + allowed for k in steps),
                    f"BPDA accuracy {result['bpda']} must not exceed the non-adaptive {result['non_adaptive']} "
                    f"by more than {knn.bpda_tolerance}")]
    metrics = {
        "dataset": dataset, "label": data["label"], "data_source": data["source"],
        "pipeline": {"ae": str(ae_path), "ae_loss": ae_info["meta"]["loss"], "ae_kwargs": ae_info["arch_kwargs"],
                     "classifier": str(classifier_path), "classifier_arch": clf_info["arch"],
                     "classifier_kwargs": clf_info["arch_kwargs"], "classifier_mode": clf_info["meta"]["mode"],
                     "knn": {"k": knn.k, "bank_size": len(bank.latents), "latent_dim": bank.latents.shape[1],
                             "search": "exact, L2, float32"}},
        "natural_accuracy": mean(natural), "robust_accuracy": result,
        "attack": {"norm": "linf", "eps": threat.eps, "alpha": threat.alpha, "steps": steps, "restarts": 1,
                   "random_start": True, "loss": "ce", "examples": len(x), "seed": params.seed,
                   "precision": "float32",
                   "non_adaptive": "PGD on AE + classifier without kNN, final iterate, classified with kNN",
                   "bpda": "PGD with the straight-through gradient through the kNN step, scored on the true "
                           "pipeline; robust = never fooled at any iterate"},
        "timing": {"bank_seconds": round(bank_seconds, 1), "natural_eval_seconds": round(natural_seconds, 1)},
        "checks": [c.as_dict() for c in checks],
        "runtime": describe_runtime(device),
    }
    enforce_checks(checks, metrics_path.stem)
    write_metrics(metrics, metrics_path, start)


if __name__ == "__main__":
    run(main)
