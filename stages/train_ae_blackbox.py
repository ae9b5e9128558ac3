"""train_ae_blackbox: the AAA autoencoder trained three ways at one budget, against one frozen classifier.

--access gradient   white-box AAA (the reference: PGD and the AE's loss backpropagate through the classifier);
--access query      the classifier is a black box (``QueryOnly``): the training attack is PGD on zeroth-order
                    gradient estimates and the AE's cross-entropy term is updated with them (``ZeroOrder``);
--access surrogate  white-box AAA against a surrogate classifier trained on the black box's labels.

Every query to the classifier is counted; the metrics give queries per training image and the wall time.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from aaa_core.attacks import PGDConfig
from aaa_core.blackbox import QueryOnly, ZeroOrder, blackbox_labels
from aaa_core.checkpoints import load_model, save_model, write_json
from aaa_core.config import ParamsError, load_params
from aaa_core.data import split_train_val
from aaa_core.evaluate import correct_flags, predictions
from aaa_core.losses import get_loss
from aaa_core.models import Defended, ae_kwargs, build, is_autoencoder, list_models
from aaa_core.runtime import Resume, load_prepared, seed_everything
from aaa_core.training import TrainConfig, pretrain_ae, train_ae, train_classifier, training_attack
from stages._cli import run

ACCESS = ("gradient", "query", "surrogate")


@click.command()
@click.option("--dataset", required=True)
@click.option("--access", type=click.Choice(ACCESS), required=True)
@click.option("--classifier", "classifier_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The frozen natural classifier (queried only, unless --access gradient).")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, access: str, classifier_path: Path, data_path: Path, out: Path, metrics_path: Path,
         params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    bb_cfg = params.section("blackbox", dataset)
    if bb_cfg.surrogate not in list_models(dataset) or is_autoencoder(dataset, bb_cfg.surrogate):
        raise ParamsError(f"{params_path}: blackbox.{dataset}.surrogate = {bb_cfg.surrogate!r}: expected a classifier "
                          f"of the {dataset} zoo")
    split, train, adv = (params.section(name, dataset) for name in ("split", "train", "adversarial"))
    seed_everything(params.seed)
    data = load_prepared(data_path)
    (x, y), (x_val, y_val) = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset,
                                             val_size=split.val_size, seed=params.seed)
    classifier, _ = load_model(classifier_path, kind="classifier", dataset=dataset)
    blackbox = QueryOnly(classifier, output=bb_cfg.output)
    attack_cfg = PGDConfig(eps=params.attack(dataset).eps, alpha=adv.alpha, steps=adv.steps)
    cfg = TrainConfig(epochs=bb_cfg.epochs, batch_size=train.batch_size, lr=train.lr, lr_patience=train.lr_patience,
                      seed=params.seed, bf16=train.bf16, epoch_images=bb_cfg.epoch_images,
                      eps_ramp=bb_cfg.eps_ramp, augment=train.augment)
    description = {"dataset": dataset, "access": access, "loss": params.loss, "classifier": str(classifier_path),
                   "train": cfg.__dict__, "attack": attack_cfg.describe(), "blackbox": bb_cfg.__dict__,
                   "n_train": len(x)}
    surrogate_info = None
    if access == "gradient":
        target = classifier
    elif access == "query":
        target = ZeroOrder(blackbox, directions=bb_cfg.directions, smoothing=bb_cfg.smoothing)
    else:
        # the surrogate learns the black box's answers (one query per image), then stands in for it
        labels, labels_val = blackbox_labels(blackbox, x), blackbox_labels(blackbox, x_val)
        clf_cfg = params.section("classifier", dataset)
        surrogate = build(dataset, bb_cfg.surrogate, **params.section("models", dataset).get(bb_cfg.surrogate, {}))
        sur_cfg = TrainConfig(epochs=clf_cfg.epochs, batch_size=train.batch_size, lr=train.lr,
                              lr_patience=train.lr_patience, seed=params.seed, bf16=train.bf16, augment=train.augment)
        sur_start = time.perf_counter()
        history = train_classifier(surrogate, x, labels, x_val, labels_val, sur_cfg, log=click.echo)
        target = surrogate.eval()
        label_queries = blackbox.queries
        # an evaluation, not training: read from the classifier itself, not counted as queries
        agreement = (predictions(surrogate, data["x_test"]) == predictions(classifier, data["x_test"])).float().mean().item()
        surrogate_info = {"arch": bb_cfg.surrogate, "train": sur_cfg.__dict__, "history": history,
                          "queries": label_queries, "test_agreement_with_blackbox": agreement,
                          "seconds": round(time.perf_counter() - sur_start, 1)}
        click.echo(f"surrogate {bb_cfg.surrogate}: agrees with the black box on {agreement:.2%} of the test set")
    arch_kwargs = ae_kwargs(dataset, params.section("ae", dataset))
    ae = build(dataset, "ae", **arch_kwargs)
    queries_before, ae_start = blackbox.queries, time.perf_counter()
    warm = []
    if bb_cfg.warm_epochs:
        click.echo(f"warm start: {bb_cfg.warm_epochs} epoch(s) of clean reconstruction")
        warm = pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=bb_cfg.warm_epochs, eps_ramp=0),
                           log=click.echo)
    resume = Resume(out, inputs=[data_path, classifier_path])
    history = train_ae(ae, [target], get_loss(params.loss), x, y, x_val, y_val, cfg,
                       attack=training_attack(attack_cfg), resume=resume.load(description, click.echo),
                       save_state=resume.saver(description), log=click.echo)
    ae_seconds = time.perf_counter() - ae_start
    ae_queries = blackbox.queries - queries_before if access == "query" else None   # white-box: no queries
    ae.eval()
    save_model(ae, out, kind="ae", dataset=dataset, arch="ae", arch_kwargs=arch_kwargs, loss=params.loss,
               access=access, description=description)
    natural = correct_flags(Defended(ae, classifier), data["x_test"], data["y_test"]).float().mean().item()
    images = cfg.epochs * (cfg.epoch_images or len(x))
    write_json({**description, "label": data["label"], "natural_test_accuracy": natural, "history": history,
                "warm_start_history": warm,
                "surrogate": surrogate_info,
                # a resumed run counts only the queries since it resumed
                "queries": {"ae_training": ae_queries, "per_training_image": ae_queries / images if ae_queries is not None else None,
                            "training_images": images,
                            "surrogate_labels": surrogate_info["queries"] if surrogate_info else 0,
                            "per_image_per_zo_gradient": bb_cfg.directions if access == "query" else 0},
                "ae_training_seconds": round(ae_seconds, 1),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()


if __name__ == "__main__":
    run(main)
