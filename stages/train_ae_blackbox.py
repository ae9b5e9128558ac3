"""train_ae_blackbox: the AAA autoencoder trained four ways at one budget, against one frozen classifier.

--access gradient   white-box AAA (the reference: PGD and the AE's loss backpropagate through the classifier);
--access query      the classifier is a black box (``QueryOnly``): the training attack is PGD on zeroth-order
                    gradient estimates and the AE's cross-entropy term is updated with them (``ZeroOrder``);
--access transfer   query-only too, but the training attack is PGD through AE + a surrogate classifier trained
                    on the black box's labels, transferred; the AE's update is still zeroth-order;
--access surrogate  white-box AAA against that surrogate (no queries after its labels).

Every query to the classifier is counted; the metrics give queries per training image and the wall time.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from aaa_core.attacks import PGDConfig
from aaa_core.training.loops import pretrain_ae
from aaa_core.training.query_only import QueryOnly, ZeroOrder, blackbox_labels
from aaa_core.config import load_blackbox
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.io import write_json
from aaa_core.config import load_params
from aaa_core.data import split_train_val
from aaa_core.evaluation.flags import correct_flags, predictions
from aaa_core.training.losses import get_loss
from aaa_core.models import Defended, ae_kwargs, build, zoo_classifiers
from aaa_core.runtime import Resume, describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from aaa_core.training.loops import TrainConfig, train_ae, train_classifier, training_attack
from stages._cli import input_file, output_file, params_file, run

ACCESS = ("gradient", "query", "transfer", "surrogate")


@click.command()
@click.option("--dataset", required=True)
@click.option("--access", type=click.Choice(ACCESS), required=True)
@input_file("--classifier", "classifier_path",
              required=True, help="The frozen natural classifier (queried only, unless --access gradient).")
@input_file("--data", "data_path", required=True)
@output_file("--out")
@output_file("--metrics", "metrics_path")
@params_file()
@params_file("--blackbox-params", "blackbox_path", "blackbox.yaml")
def main(dataset: str, access: str, classifier_path: Path, data_path: Path, out: Path, metrics_path: Path,
         params_path: Path,
         blackbox_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    bb_cfg = load_blackbox(blackbox_path, dataset, params.scale, zoo_classifiers(dataset))
    split, train, adv = (params.section(name, dataset) for name in ("split", "train", "adversarial"))
    seed_everything(params.seed)
    device = resolve_device(params.device)
    data = load_prepared(data_path, device)
    (x, y), (x_val, y_val) = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset,
                                             val_size=split.val_size, seed=params.seed)
    classifier, _ = load_model(classifier_path, kind="classifier", dataset=dataset, device=device)
    blackbox = QueryOnly(classifier, output=bb_cfg.output)
    attack_cfg = PGDConfig(eps=params.attack(dataset).eps, alpha=adv.alpha, steps=adv.steps)
    cfg = TrainConfig(epochs=bb_cfg.epochs, batch_size=train.batch_size, lr=train.lr, lr_patience=train.lr_patience,
                      seed=params.seed, bf16=train.bf16, epoch_images=bb_cfg.epoch_images,
                      eps_ramp=bb_cfg.eps_ramp, augment=train.augment)
    description = {"dataset": dataset, "access": access, "loss": params.loss, "classifier": str(classifier_path),
                   "train": cfg.__dict__, "attack": attack_cfg.describe(), "blackbox": bb_cfg.__dict__,
                   "n_train": len(x)}
    surrogate, surrogate_info = None, None
    if access in ("surrogate", "transfer"):
        surrogate, surrogate_info = train_surrogate(blackbox, classifier, params, bb_cfg, dataset, x, x_val,
                                                    data["x_test"])
    attack = training_attack(attack_cfg)
    if access == "gradient":
        target = classifier
    elif access == "surrogate":
        target = surrogate
    else:
        target = ZeroOrder(blackbox, directions=bb_cfg.directions, smoothing=bb_cfg.smoothing)
    if access == "transfer":
        crafted = attack

        def attack(pipeline, xb, yb, generator, strength):
            """PGD through the pipeline's AE and the surrogate; the examples then meet the black box."""
            return crafted(Defended(pipeline.ae, surrogate), xb, yb, generator, strength)
    arch_kwargs = ae_kwargs(dataset, params.section("ae", dataset))
    ae = build(dataset, "ae", **arch_kwargs).to(device)
    queries_before, ae_start = blackbox.queries, time.perf_counter()
    resume = Resume(out, inputs=[data_path, classifier_path])
    state = resume.load(description, click.echo)
    warm = []
    if bb_cfg.warm_epochs and state is None:   # a resumed state replaces the AE's weights anyway
        click.echo(f"warm start: {bb_cfg.warm_epochs} epoch(s) of clean reconstruction")
        warm = pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=bb_cfg.warm_epochs, eps_ramp=0),
                           log=click.echo)
    history = train_ae(ae, [target], get_loss(params.loss), x, y, x_val, y_val, cfg, attack=attack, resume=state,
                       save_state=resume.saver(description), log=click.echo)
    ae_seconds = time.perf_counter() - ae_start
    # training and validation passes (after a resume, only those since); none where gradients are used
    ae_queries = blackbox.queries - queries_before if access in ("query", "transfer") else None
    ae.eval()
    save_model(ae, out, kind="ae", dataset=dataset, arch="ae", arch_kwargs=arch_kwargs, loss=params.loss,
               access=access, description=description)
    natural = correct_flags(Defended(ae, classifier), data["x_test"], data["y_test"]).float().mean().item()
    images = cfg.epochs * (cfg.epoch_images or len(x))
    write_json({**description, "label": data["label"], "natural_test_accuracy": natural, "history": history,
                "warm_start_history": warm,
                "surrogate": surrogate_info,
                "queries": {"ae_training": ae_queries,
                            "per_training_image": None if ae_queries is None else ae_queries / images,
                            "training_images": images,
                            "surrogate_labels": surrogate_info["queries"] if surrogate_info else 0,
                            "per_image_per_zo_gradient": bb_cfg.directions if ae_queries is not None else 0},
                "ae_training_seconds": round(ae_seconds, 1),
                "runtime": describe_runtime(device, bf16_training=cfg.bf16),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()


def train_surrogate(blackbox: QueryOnly, classifier, params, bb_cfg, dataset: str, x, x_val, x_test):
    """A classifier of ``bb_cfg.surrogate``'s architecture trained naturally on the black box's labels of the
    training and validation images (one query each). Returns (surrogate in eval mode, what it cost)."""
    train = params.section("train", dataset)
    labels, labels_val = blackbox_labels(blackbox, x), blackbox_labels(blackbox, x_val)
    surrogate = build(dataset, bb_cfg.surrogate,
                      **params.section("models", dataset).get(bb_cfg.surrogate, {})).to(x.device)
    cfg = TrainConfig(epochs=params.section("classifier", dataset).epochs, batch_size=train.batch_size, lr=train.lr,
                      lr_patience=train.lr_patience, seed=params.seed, bf16=train.bf16, augment=train.augment)
    start = time.perf_counter()
    history = train_classifier(surrogate, x, labels, x_val, labels_val, cfg, log=click.echo)
    # an evaluation, not training: read from the classifier itself, not counted as queries
    agreement = (predictions(surrogate, x_test) == predictions(classifier, x_test)).float().mean().item()
    click.echo(f"surrogate {bb_cfg.surrogate}: agrees with the black box on {agreement:.2%} of the test set")
    return surrogate.eval(), {"arch": bb_cfg.surrogate, "train": cfg.__dict__, "history": history,
                              "queries": len(x) + len(x_val), "test_agreement_with_blackbox": agreement,
                              "seconds": round(time.perf_counter() - start, 1)}


if __name__ == "__main__":
    run(main)
