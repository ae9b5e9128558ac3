"""train_surrogate: a classifier the defender owns, fitted to a black box's answers (one query per image).

blackbox.yaml's ``surrogate`` architecture (of the dataset's zoo, its own weights) is fitted to the frozen classifier's
answers for the training and validation split, queried through ``QueryOnly``: ``--fit labels`` learns its predicted
classes (all a label-only black box gives), ``--fit scores`` distils its scores (``output``: logits or probabilities).
The black-box study's AEs trained blind are then trained against it (stages/train_ae_blackbox.py). The metrics give
its queries, its agreement with the black box on the test set and the mean cosine between its input gradient and
the black box's on the first ``--gradient-examples`` test images (both read from the classifier directly: an
evaluation, not counted as queries).
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.evaluation.flags import predictions
from aaa_core.io import write_json
from aaa_core.models import build
from aaa_core.models.checkpoints import save_model
from aaa_core.runtime import describe_runtime
from aaa_core.training.loops import TrainConfig
from aaa_core.training.query_only import FITS, input_gradient_cosine, train_surrogate
from stages._blackbox import setup
from stages._cli import input_file, output_file, params_file, run


@click.command()
@click.option("--dataset", required=True)
@click.option("--fit", type=click.Choice(FITS), required=True,
              help="labels: the black box's predicted classes; scores: its logits or probabilities (blackbox.yaml's "
                   "output), distilled.")
@input_file("--classifier", "classifier_path", required=True, help="The frozen natural classifier (queried only).")
@input_file("--data", "data_path", required=True)
@output_file("--out")
@output_file("--metrics", "metrics_path")
@click.option("--gradient-examples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="test images on which the surrogate's input gradient is compared with the black box's")
@params_file()
@params_file("--blackbox-params", "blackbox_path", "blackbox.yaml")
def main(dataset: str, fit: str, classifier_path: Path, data_path: Path, out: Path, metrics_path: Path,
         gradient_examples: int, params_path: Path, blackbox_path: Path) -> None:
    start = time.perf_counter()
    study = setup(dataset, classifier_path, data_path, params_path, blackbox_path)
    params, bb_cfg, device, data, classifier = study.params, study.bb_cfg, study.device, study.data, study.classifier
    (x, _), (x_val, _) = study.train, study.val
    train = params.section("train", dataset)
    arch_kwargs = params.section("models", dataset).get(bb_cfg.surrogate, {})
    cfg = TrainConfig(epochs=params.section("classifier", dataset).epochs, batch_size=train.batch_size, lr=train.lr,
                      lr_patience=train.lr_patience, seed=params.seed, bf16=train.bf16, augment=train.augment)
    surrogate, info = train_surrogate(study.blackbox, build(dataset, bb_cfg.surrogate, **arch_kwargs).to(device), x, x_val,
                                      cfg, fit=fit, log=click.echo)
    x_test, y_test = data["x_test"], data["y_test"]
    agreement = (predictions(surrogate, x_test) == predictions(classifier, x_test)).float().mean().item()
    cosine = input_gradient_cosine(surrogate, classifier, x_test[:gradient_examples], y_test[:gradient_examples])
    click.echo(f"surrogate {bb_cfg.surrogate} fitted to the black box's {fit}: agrees with it on {agreement:.2%} of "
               f"the test set, input-gradient cosine {cosine:.3f} ({info['queries']:,} queries)")
    save_model(surrogate, out, kind="classifier", dataset=dataset, arch=bb_cfg.surrogate, arch_kwargs=arch_kwargs,
               fit=fit, trained_on=f"the {fit} of {classifier_path}")
    write_json({"dataset": dataset, "arch": bb_cfg.surrogate, "arch_kwargs": arch_kwargs,
                "classifier": str(classifier_path), "output": bb_cfg.output, "train": cfg.__dict__,
                "n_train": len(x), "n_val": len(x_val), **info, "test_agreement_with_blackbox": agreement,
                "input_gradient_cosine": {"mean": cosine, "examples": min(gradient_examples, len(x_test)),
                                          "loss": "ce", "split": "test"},
                "runtime": describe_runtime(device, bf16_training=cfg.bf16),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)


if __name__ == "__main__":
    run(main)
