"""train_ae: AAA, one autoencoder adversarially trained against one or more frozen natural classifiers.

The AE's training knobs come from params.yaml's ``ae.<dataset>`` (``warm_epochs``: epochs of clean
reconstruction first; ``mse_weight``: the MSE term's weight in L_ce+mse); ``--warm-epochs`` and
``--mse-weight`` override them for one run (the ablation pipeline's variants). ``--gaussian`` replaces the
PGD training attack by Gaussian noise at the sigmas of params ``certify.<dataset>`` (the denoised-smoothing
reference of the certification pipeline), at the same budget."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from aaa_core import distributed
from aaa_core.attacks import PGDConfig
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.io import write_json
from aaa_core.config import AE_LOSSES, load_params
from aaa_core.data import split_train_val
from aaa_core.evaluation.flags import correct_flags, precision_gap
from aaa_core.training.losses import get_loss
from aaa_core.models import Defended, ae_kwargs, build
from aaa_core.runtime import Resume, describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from aaa_core.training.loops import TrainConfig, noise_attack, pretrain_ae, train_ae, training_attack
from stages._cli import input_file, output_file, params_file, run


@click.command()
@click.option("--dataset", required=True)
@click.option("--loss", type=click.Choice(AE_LOSSES), required=True)
@click.option("--classifier", "classifier_paths", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Frozen natural classifier(s); give several for ensemble training.")
@input_file("--data", "data_path", required=True)
@output_file("--out")
@output_file("--metrics", "metrics_path")
@params_file()
@click.option("--warm-epochs", type=click.IntRange(0), default=None,
              help="Override params ae.<dataset>.warm_epochs (epochs of clean reconstruction first).")
@click.option("--mse-weight", type=click.FloatRange(0, min_open=True), default=None,
              help="Override params ae.<dataset>.mse_weight (L_ce+mse = ce + W * mse).")
@click.option("--gaussian", is_flag=True,
              help="Train on Gaussian noise (params certify.<dataset>.sigmas, one drawn per batch) instead of PGD.")
def main(dataset: str, loss: str, classifier_paths: tuple[Path, ...], data_path: Path, out: Path,
         metrics_path: Path, params_path: Path, warm_epochs: int | None, mse_weight: float | None,
         gaussian: bool) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    split, train, adv = (params.section(name, dataset) for name in ("split", "train", "adversarial"))
    ae_cfg = params.section("ae", dataset)
    noise_sigmas = params.section("certify", dataset).sigmas if gaussian else []
    warm_epochs = ae_cfg.warm_epochs if warm_epochs is None else warm_epochs
    mse_weight = ae_cfg.mse_weight if mse_weight is None else mse_weight
    distributed.relaunch(params.devices, "stages.train_ae")
    seed_everything(params.seed)
    device = distributed.init(resolve_device(params.device))
    data = load_prepared(data_path, device)
    (x, y), (x_val, y_val) = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset,
                                             val_size=split.val_size, seed=params.seed)
    classifiers = [load_model(p, kind="classifier", device=device)[0] for p in classifier_paths]
    attack_cfg = PGDConfig(eps=params.attack(dataset).eps, alpha=adv.alpha, steps=adv.steps)
    # the same schedule as Madry training: epoch size, eps ramp, optimiser, precision
    cfg = TrainConfig(epochs=adv.epochs, batch_size=train.batch_size, lr=train.lr,
                      lr_patience=train.lr_patience, seed=params.seed, bf16=train.bf16,
                      epoch_images=adv.epoch_images, eps_ramp=adv.eps_ramp, augment=train.augment)
    attack = noise_attack(noise_sigmas) if noise_sigmas else training_attack(attack_cfg)
    arch_kwargs = ae_kwargs(dataset, ae_cfg)
    ae = build(dataset, "ae", **arch_kwargs).to(device)
    description = {"dataset": dataset, "loss": loss, "classifiers": [str(p) for p in classifier_paths],
                   "train": cfg.__dict__,
                   "attack": ({"kind": "gaussian noise", "sigmas": list(noise_sigmas), "clipped": False}
                              if noise_sigmas else attack_cfg.describe()), "n_train": len(x),
                   "arch_kwargs": arch_kwargs, "processes": distributed.world_size(),
                   "warm_epochs": warm_epochs, "mse_weight": mse_weight if loss == "ce_mse" else None}
    resume = Resume(out, inputs=[data_path, *classifier_paths])
    state = resume.load(description, click.echo)
    warm = []
    if warm_epochs and state is None:   # a resumed state replaces the AE's weights anyway
        click.echo(f"warm start: {warm_epochs} epoch(s) of clean reconstruction")
        warm = pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=warm_epochs, eps_ramp=0), log=click.echo)
    history = train_ae(ae, classifiers, get_loss(loss, mse_weight), x, y, x_val, y_val, cfg, attack=attack,
                       resume=state, save_state=resume.saver(description), log=click.echo)
    if not distributed.is_main():   # rank 0 alone evaluates and writes
        return distributed.finish()
    ae.eval()
    save_model(ae, out, kind="ae", dataset=dataset, arch="ae", arch_kwargs=arch_kwargs, loss=loss,
               description=description)
    # the bf16 training attack must not be weaker than the float32 one it stands for (float32: nothing to check)
    check = ([precision_gap(Defended(ae, c), x_val[:256], y_val[:256], attack_cfg) for c in classifiers]
             if cfg.bf16 and not noise_sigmas else None)
    # on the validation split: the test set is the evaluation stages' (their natural accuracy is the one reported)
    natural = [correct_flags(Defended(ae, c), x_val, y_val).float().mean().item() for c in classifiers]
    write_json({**description, "label": data["label"], "natural_val_accuracy": natural, "n_val": len(x_val),
                "training_attack_precision": check, "history": history, "warm_start_history": warm,
                "runtime": describe_runtime(device, bf16_training=cfg.bf16),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()
    distributed.finish()


if __name__ == "__main__":
    run(main)
