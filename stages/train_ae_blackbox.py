"""train_ae_blackbox: the AAA autoencoder trained three ways at one budget, against one frozen classifier.

--access gradient   white-box AAA (the reference: PGD and the AE's loss backpropagate through the classifier);
--access query      the classifier is a black box (``QueryOnly``): the training attack is PGD through the AE and
                    ``--surrogate`` (a classifier trained on the black box's labels, stages/train_surrogate.py),
                    transferred; the AE's update is the black box's loss, its gradient ``surrogate_weight`` times
                    the surrogate's exact one (``SurrogateBlend``) plus the rest times a zeroth-order estimate taken
                    in the AE's latent, decoder and classifier queried as one black box (``LatentAE``,
                    ``ThroughLatent``: coordinate-wise differences for ``estimate_images`` images of each batch);
--access surrogate  white-box AAA against that surrogate (no queries after its labels).

Every query to the classifier is counted; the metrics give queries per training image and the wall time.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from aaa_core.attacks import PGDConfig
from aaa_core.config import load_blackbox, load_params
from aaa_core.data import load_prepared, split_train_val
from aaa_core.evaluation.flags import correct_flags
from aaa_core.io import write_json
from aaa_core.models import Defended, ae_kwargs, build, zoo_classifiers
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.runtime import Resume, describe_runtime, resolve_device, seed_everything
from aaa_core.training.loops import TrainConfig, pretrain_ae, train_ae, training_attack
from aaa_core.training.losses import get_loss
from aaa_core.training.query_only import (LatentAE, LatentZeroOrder, QueryOnly, SurrogateBlend, ThroughLatent,
                                          transferred)
from stages._cli import input_file, output_file, params_file, run

ACCESS = ("gradient", "query", "surrogate")


@click.command()
@click.option("--dataset", required=True)
@click.option("--access", type=click.Choice(ACCESS), required=True)
@input_file("--classifier", "classifier_path",
              required=True, help="The frozen natural classifier (queried only, unless --access gradient).")
@input_file("--data", "data_path", required=True)
@input_file("--surrogate", "surrogate_path", default=None,
            help="The surrogate (stages/train_surrogate.py): needed by --access query and surrogate, "
                 "unused by gradient.")
@output_file("--out")
@output_file("--metrics", "metrics_path")
@params_file()
@params_file("--blackbox-params", "blackbox_path", "blackbox.yaml")
def main(dataset: str, access: str, classifier_path: Path, data_path: Path, surrogate_path: Path | None, out: Path,
         metrics_path: Path, params_path: Path, blackbox_path: Path) -> None:
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
                   "n_train": len(x), "n_val": len(x_val)}
    if access != "gradient" and surrogate_path is None:
        raise click.UsageError(f"--access {access} needs --surrogate (stages/train_surrogate.py writes it)")
    surrogate = None
    if access != "gradient":
        surrogate, _ = load_model(surrogate_path, kind="classifier", dataset=dataset, device=device)
        description["surrogate"] = str(surrogate_path)
    attack = training_attack(attack_cfg)
    arch_kwargs = ae_kwargs(dataset, params.section("ae", dataset))
    ae = build(dataset, "ae", **arch_kwargs).to(device)
    trained, target = ae, classifier
    if access == "surrogate":
        target = surrogate
    elif access == "query":
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
    ae_queries = resumed_queries + blackbox.queries - queries_before if access == "query" else None
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
                            "per_estimated_image": ae.latent_dim if access == "query" else 0},
                "ae_training_seconds": round(ae_seconds, 1),
                "runtime": describe_runtime(device, bf16_training=cfg.bf16),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()


if __name__ == "__main__":
    run(main)
