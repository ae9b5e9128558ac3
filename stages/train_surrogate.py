"""train_surrogate: a classifier the defender owns, trained on a black box's labels (one query per image).

blackbox.yaml's ``surrogate`` architecture (of the dataset's zoo, its own weights) learns the frozen classifier's
predicted labels of the training and validation split, queried through ``QueryOnly``; it is then what the
black-box study's query-only AE is attacked through in training, and what the surrogate-trained AE is trained
against (stages/train_ae_blackbox.py). The metrics give its queries and its agreement with the black box on the
test set (read from the classifier directly: an evaluation, not counted as queries).
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.config import load_blackbox, load_params
from aaa_core.data import load_prepared, split_train_val
from aaa_core.evaluation.flags import predictions
from aaa_core.io import write_json
from aaa_core.models import build, zoo_classifiers
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.runtime import describe_runtime, resolve_device, seed_everything
from aaa_core.training.loops import TrainConfig
from aaa_core.training.query_only import QueryOnly, train_surrogate
from stages._cli import input_file, output_file, params_file, run


@click.command()
@click.option("--dataset", required=True)
@input_file("--classifier", "classifier_path", required=True, help="The frozen natural classifier (queried only).")
@input_file("--data", "data_path", required=True)
@output_file("--out")
@output_file("--metrics", "metrics_path")
@params_file()
@params_file("--blackbox-params", "blackbox_path", "blackbox.yaml")
def main(dataset: str, classifier_path: Path, data_path: Path, out: Path, metrics_path: Path, params_path: Path,
         blackbox_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    bb_cfg = load_blackbox(blackbox_path, dataset, params.scale, zoo_classifiers(dataset))
    split, train = params.section("split", dataset), params.section("train", dataset)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    (x, _), (x_val, _) = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset,
                                         val_size=split.val_size, seed=params.seed)
    classifier, _ = load_model(classifier_path, kind="classifier", dataset=dataset, device=device)
    blackbox = QueryOnly(classifier, output=bb_cfg.output)
    arch_kwargs = params.section("models", dataset).get(bb_cfg.surrogate, {})
    cfg = TrainConfig(epochs=params.section("classifier", dataset).epochs, batch_size=train.batch_size, lr=train.lr,
                      lr_patience=train.lr_patience, seed=params.seed, bf16=train.bf16, augment=train.augment)
    surrogate, info = train_surrogate(blackbox, build(dataset, bb_cfg.surrogate, **arch_kwargs).to(device), x, x_val,
                                      cfg, log=click.echo)
    agreement = (predictions(surrogate, data["x_test"]) == predictions(classifier, data["x_test"])).float().mean().item()
    click.echo(f"surrogate {bb_cfg.surrogate}: agrees with the black box on {agreement:.2%} of the test set "
               f"({info['queries']:,} queries)")
    save_model(surrogate, out, kind="classifier", dataset=dataset, arch=bb_cfg.surrogate, arch_kwargs=arch_kwargs,
               trained_on=f"the labels of {classifier_path}")
    write_json({"dataset": dataset, "arch": bb_cfg.surrogate, "arch_kwargs": arch_kwargs,
                "classifier": str(classifier_path), "output": bb_cfg.output, "train": cfg.__dict__,
                "n_train": len(x), "n_val": len(x_val), **info, "test_agreement_with_blackbox": agreement,
                "runtime": describe_runtime(device, bf16_training=cfg.bf16),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)


if __name__ == "__main__":
    run(main)
