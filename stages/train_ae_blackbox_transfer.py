"""train_ae_blackbox_transfer: query-only AAA whose training attack is crafted on a surrogate.

The fourth way of the black-box comparison (beside ``train_ae_blackbox``'s gradient, query and surrogate):
the AE's update still sees the classifier only through queries (a zeroth-order estimate, as ``--access
query``), but every training batch is attacked by PGD through AE + a surrogate classifier, trained on the
black box's labels, and transferred: (q + 1) queries per image and iteration instead of (steps + 1)(q + 1).
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


@click.command()
@click.option("--dataset", required=True)
@click.option("--classifier", "classifier_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The frozen natural classifier, only ever queried.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, classifier_path: Path, data_path: Path, out: Path, metrics_path: Path, params_path: Path) -> None:
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
    description = {"dataset": dataset, "access": "transfer", "loss": params.loss, "classifier": str(classifier_path),
                   "train": cfg.__dict__, "attack": attack_cfg.describe(), "blackbox": bb_cfg.__dict__,
                   "n_train": len(x)}

    # the surrogate learns the black box's answers (one query per image)
    labels, labels_val = blackbox_labels(blackbox, x), blackbox_labels(blackbox, x_val)
    surrogate = build(dataset, bb_cfg.surrogate, **params.section("models", dataset).get(bb_cfg.surrogate, {}))
    sur_cfg = dataclasses.replace(cfg, epochs=params.section("classifier", dataset).epochs, epoch_images=0, eps_ramp=0)
    sur_start = time.perf_counter()
    sur_history = train_classifier(surrogate, x, labels, x_val, labels_val, sur_cfg, log=click.echo)
    surrogate.eval()
    agreement = (predictions(surrogate, data["x_test"]) == predictions(classifier, data["x_test"])).float().mean().item()
    surrogate_info = {"arch": bb_cfg.surrogate, "train": sur_cfg.__dict__, "history": sur_history,
                      "queries": blackbox.queries, "test_agreement_with_blackbox": agreement,
                      "seconds": round(time.perf_counter() - sur_start, 1)}
    click.echo(f"surrogate {bb_cfg.surrogate}: agrees with the black box on {agreement:.2%} of the test set")

    crafted = training_attack(attack_cfg)

    def transferred(pipeline, xb, yb, generator, strength):
        """PGD through the pipeline's AE and the surrogate; the examples then meet the black box."""
        return crafted(Defended(pipeline.ae, surrogate), xb, yb, generator, strength)

    arch_kwargs = ae_kwargs(dataset, params.section("ae", dataset))
    ae = build(dataset, "ae", **arch_kwargs)
    queries_before, ae_start = blackbox.queries, time.perf_counter()
    resume = Resume(out, inputs=[data_path, classifier_path])
    state = resume.load(description, click.echo)
    # the warm start only when starting afresh: a resumed state replaces the AE's weights anyway
    warm = pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=bb_cfg.warm_epochs, eps_ramp=0),
                       log=click.echo) if bb_cfg.warm_epochs and state is None else []
    target = ZeroOrder(blackbox, directions=bb_cfg.directions, smoothing=bb_cfg.smoothing)
    history = train_ae(ae, [target], get_loss(params.loss), x, y, x_val, y_val, cfg, attack=transferred,
                       resume=state, save_state=resume.saver(description), log=click.echo)
    ae_seconds, ae_queries = time.perf_counter() - ae_start, blackbox.queries - queries_before
    ae.eval()
    save_model(ae, out, kind="ae", dataset=dataset, arch="ae", arch_kwargs=arch_kwargs, loss=params.loss,
               access="transfer", description=description)
    natural = correct_flags(Defended(ae, classifier), data["x_test"], data["y_test"]).float().mean().item()
    images = cfg.epochs * (cfg.epoch_images or len(x))
    write_json({**description, "label": data["label"], "natural_test_accuracy": natural, "history": history,
                "warm_start_history": warm, "surrogate": surrogate_info,
                # training and validation passes; after a resume, only those since it resumed
                "queries": {"ae_training": ae_queries, "per_training_image": ae_queries / images,
                            "training_images": images, "surrogate_labels": surrogate_info["queries"],
                            "per_image_per_zo_gradient": bb_cfg.directions},
                "ae_training_seconds": round(ae_seconds, 1),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()


if __name__ == "__main__":
    run(main)
