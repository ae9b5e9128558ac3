"""train_ae_blackbox: the AAA autoencoder trained at one budget against one frozen classifier, with three kinds of access.

--access gradient   white-box AAA (the reference: PGD and the AE's loss backpropagate through the classifier);
--access labels     the classifier answers only its predicted class: the AE trains white-box against ``--surrogate``,
                    a classifier fitted to those labels (stages/train_surrogate.py --fit labels); no further query;
--access scores     the classifier answers its logits or probabilities (blackbox.yaml's ``output``): the AE trains
                    against ``--surrogate`` fitted to those scores (train_surrogate --fit scores). With blackbox.yaml's
                    ``surrogate_weight`` 1 that is white-box AAA against the surrogate, no further query; below 1
                    the training attack still runs through AE + surrogate (``transferred``), and the AE's update is
                    the black box's loss, its gradient ``surrogate_weight`` times the surrogate's exact one
                    (``SurrogateBlend``) plus the rest times a zeroth-order estimate taken in the AE's latent, decoder
                    and classifier queried as one black box (``LatentAE``, ``ThroughLatent``: coordinate-wise
                    differences for ``estimate_images`` images of each batch).

Every query to the classifier is counted; the metrics give the AE training's queries (the surrogate's are in its own
metrics) and the wall time.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from aaa_core.attacks import PGDConfig
from aaa_core.evaluation.flags import correct_flags
from aaa_core.io import write_json
from aaa_core.models import Defended, ae_kwargs, build
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.runtime import Resume, describe_runtime
from aaa_core.training.loops import TrainConfig, pretrain_ae, train_ae, training_attack
from aaa_core.training.losses import get_loss
from aaa_core.training.query_only import (LatentAE, LatentZeroOrder, SurrogateBlend, ThroughLatent,
                                          transferred)
from stages._blackbox import setup
from stages._cli import input_file, output_file, params_file, run

ACCESS = ("gradient", "labels", "scores")
BUDGET = ("epochs", "epoch_images", "eps_ramp", "warm_epochs")   # blackbox.yaml's keys white-box training reads


@click.command()
@click.option("--dataset", required=True)
@click.option("--access", type=click.Choice(ACCESS), required=True)
@input_file("--classifier", "classifier_path",
              required=True, help="The frozen natural classifier (queried only, unless --access gradient).")
@input_file("--data", "data_path", required=True)
@input_file("--surrogate", "surrogate_path", default=None,
            help="The surrogate (stages/train_surrogate.py, fitted to what --access names): needed by labels and "
                 "scores, refused by gradient.")
@output_file("--out")
@output_file("--metrics", "metrics_path")
@params_file()
@params_file("--blackbox-params", "blackbox_path", "blackbox.yaml")
def main(dataset: str, access: str, classifier_path: Path, data_path: Path, surrogate_path: Path | None, out: Path,
         metrics_path: Path, params_path: Path, blackbox_path: Path) -> None:
    start = time.perf_counter()
    study = setup(dataset, classifier_path, data_path, params_path, blackbox_path)
    params, bb_cfg, device, data = study.params, study.bb_cfg, study.device, study.data
    classifier, blackbox = study.classifier, study.blackbox
    (x, y), (x_val, y_val) = study.train, study.val
    train, adv = params.section("train", dataset), params.section("adversarial", dataset)
    attack_cfg = PGDConfig(eps=params.attack(dataset).eps, alpha=adv.alpha, steps=adv.steps)
    cfg = TrainConfig(epochs=bb_cfg.epochs, batch_size=train.batch_size, lr=train.lr, lr_patience=train.lr_patience,
                      seed=params.seed, bf16=train.bf16, epoch_images=bb_cfg.epoch_images,
                      eps_ramp=bb_cfg.eps_ramp, augment=train.augment)
    description = {"dataset": dataset, "access": access, "loss": params.loss, "classifier": str(classifier_path),
                   "train": cfg.__dict__, "attack": attack_cfg.describe(), "blackbox": {k: v for k, v in bb_cfg.__dict__.items() if access != "gradient" or k in BUDGET},
                   "n_train": len(x), "n_val": len(x_val)}
    if (access == "gradient") != (surrogate_path is None):
        raise click.UsageError(f"--access {access} needs --surrogate (stages/train_surrogate.py --fit {access} writes "
                               "it)" if surrogate_path is None else "--access gradient trains white-box: no --surrogate")
    surrogate = None
    if access != "gradient":
        surrogate, surrogate_info = load_model(surrogate_path, kind="classifier", dataset=dataset, device=device)
        fitted = surrogate_info["meta"].get("fit")
        if fitted != access:
            what = f"was fitted to the black box's {fitted}" if fitted else "records no fit (an older surrogate)"
            raise click.BadParameter(f"{surrogate_path} {what}, not its {access}: pass the surrogate of "
                                     f"stages.train_surrogate --fit {access}", param_hint="--surrogate")
        description["surrogate"] = str(surrogate_path)
    attack = training_attack(attack_cfg)
    arch_kwargs = ae_kwargs(dataset, params.section("ae", dataset))
    ae = build(dataset, "ae", **arch_kwargs).to(device)
    trained, target = ae, classifier
    estimated = access == "scores" and bb_cfg.surrogate_weight < 1
    if access != "gradient" and not estimated:
        target = surrogate
    elif estimated:
        trained = LatentAE(ae)
        estimate = ThroughLatent(LatentZeroOrder(ae.decoder, blackbox, estimator="cge", smoothing=bb_cfg.smoothing),
                                 estimate_images=bb_cfg.estimate_images)
        target = SurrogateBlend(estimate, surrogate, bb_cfg.surrogate_weight)
        attack = transferred(attack, surrogate)
    queries_before, ae_start = blackbox.queries, time.perf_counter()
    resume = Resume(out, inputs=[data_path, classifier_path] + ([surrogate_path] if surrogate is not None else []))
    state = resume.load(description, click.echo)
    # queries spent before an interruption, kept in the resume state so that the count covers the whole run
    resumed_queries = state.pop("blackbox_queries", 0) if state is not None else 0
    saver = resume.saver(description)

    def save_state(train_state: dict) -> None:
        saver({**train_state, "blackbox_queries": resumed_queries + blackbox.queries - queries_before})
    warm = []
    if bb_cfg.warm_epochs and state is None:   # a resumed state replaces the AE's weights anyway
        click.echo(f"warm start: {bb_cfg.warm_epochs} epoch(s) of clean reconstruction")
        warm = pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=bb_cfg.warm_epochs, eps_ramp=0),
                           log=click.echo)
    history = train_ae(trained, [target], get_loss(params.loss), x, y, x_val, y_val, cfg, attack=attack, resume=state,
                       save_state=save_state, log=click.echo)
    ae_seconds = time.perf_counter() - ae_start
    # training and validation passes, before an interruption too; none where gradients are used
    ae_queries = resumed_queries + blackbox.queries - queries_before if access != "gradient" else None
    ae.eval()
    save_model(ae, out, kind="ae", dataset=dataset, arch="ae", arch_kwargs=arch_kwargs, loss=params.loss,
               access=access, description=description)
    natural = correct_flags(Defended(ae, classifier), data["x_test"], data["y_test"]).float().mean().item()
    images = cfg.epochs * (cfg.epoch_images or len(x))
    write_json({**description, "label": data["label"], "natural_test_accuracy": natural, "history": history,
                "warm_start_history": warm,
                "queries": {"ae_training": ae_queries,
                            "per_training_image": None if ae_queries is None else ae_queries / images,
                            "training_images": images,
                            "per_estimated_image": ae.latent_dim if estimated else 0},
                "ae_training_seconds": round(ae_seconds, 1),
                "runtime": describe_runtime(device, bf16_training=cfg.bf16),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()


if __name__ == "__main__":
    run(main)
