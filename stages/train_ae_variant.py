"""train_ae_variant: the study's L_ce+mse AE with one training change (ablations/dvc.yaml).

The same budget, seed, attack and schedule as train_ae@<dataset>-ce_mse; the variant (ablations.yaml)
sets the MSE term's weight (L = ce + weight * mse) and the epochs of clean reconstruction before
adversarial training (a warm start, no attack, no classifier). Kept out of train_ae until a measurement
chooses a default, so the study's AEs and their hashes stay as they are.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from aaa_core import distributed
from aaa_core.ablation import load_variants, weighted_ce_mse
from aaa_core.attacks import PGDConfig
from aaa_core.blackbox import pretrain_ae
from aaa_core.checkpoints import load_model, save_model, write_json
from aaa_core.config import load_params
from aaa_core.data import split_train_val
from aaa_core.evaluate import correct_flags, precision_gap
from aaa_core.models import Defended, ae_kwargs, build
from aaa_core.runtime import Resume, describe_runtime, load_prepared, resolve_device, seed_everything
from aaa_core.training import TrainConfig, train_ae, training_attack
from stages._cli import run


@click.command()
@click.option("--dataset", required=True)
@click.option("--variant", required=True, help="A variant of ablations.yaml's <dataset> section.")
@click.option("--classifier", "classifier_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The frozen natural classifier the AE is trained against.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
@click.option("--ablations", "ablations_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="ablations.yaml", show_default=True)
def main(dataset: str, variant: str, classifier_path: Path, data_path: Path, out: Path, metrics_path: Path,
         params_path: Path, ablations_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    variants = load_variants(ablations_path, dataset)
    if variant not in variants:
        raise click.BadParameter(f"{variant!r} is not a variant of {ablations_path} ({', '.join(variants)})",
                                 param_hint="--variant")
    change = variants[variant]
    split, train, adv = (params.section(name, dataset) for name in ("split", "train", "adversarial"))
    distributed.relaunch(params.devices, "stages.train_ae_variant")   # as train_ae: DDP under torchrun
    seed_everything(params.seed)
    device = distributed.init(resolve_device(params.device))
    data = load_prepared(data_path, device)
    (x, y), (x_val, y_val) = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset,
                                             val_size=split.val_size, seed=params.seed)
    classifier = load_model(classifier_path, kind="classifier", device=device)[0]
    attack_cfg = PGDConfig(eps=params.attack(dataset).eps, alpha=adv.alpha, steps=adv.steps)
    cfg = TrainConfig(epochs=adv.epochs, batch_size=train.batch_size, lr=train.lr,
                      lr_patience=train.lr_patience, seed=params.seed, bf16=train.bf16,
                      epoch_images=adv.epoch_images, eps_ramp=adv.eps_ramp, augment=train.augment)
    arch_kwargs = ae_kwargs(dataset, params.section("ae", dataset))
    ae = build(dataset, "ae", **arch_kwargs).to(device)
    description = {"dataset": dataset, "loss": "ce_mse", "variant": variant, **dataclasses.asdict(change),
                   "classifiers": [str(classifier_path)], "train": cfg.__dict__, "attack": attack_cfg.describe(),
                   "n_train": len(x), "arch_kwargs": arch_kwargs, "processes": distributed.world_size()}
    resume = Resume(out, inputs=[data_path, classifier_path])
    state = resume.load(description, click.echo)
    warm = []
    if change.warm_epochs and state is None:   # a resumed state replaces the AE's weights anyway
        click.echo(f"warm start: {change.warm_epochs} epoch(s) of clean reconstruction")
        warm = pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=change.warm_epochs, eps_ramp=0),
                           log=click.echo)
    history = train_ae(ae, [classifier], weighted_ce_mse(change.mse_weight), x, y, x_val, y_val, cfg,
                       attack=training_attack(attack_cfg), resume=state, save_state=resume.saver(description),
                       log=click.echo)
    if not distributed.is_main():   # rank 0 alone evaluates and writes
        return distributed.finish()
    ae.eval()
    save_model(ae, out, kind="ae", dataset=dataset, arch="ae", arch_kwargs=arch_kwargs, loss="ce_mse",
               description=description)
    check = [precision_gap(Defended(ae, classifier), x_val[:256], y_val[:256], attack_cfg)]
    natural = correct_flags(Defended(ae, classifier), data["x_test"], data["y_test"]).float().mean().item()
    write_json({**description, "label": data["label"], "natural_test_accuracy": [natural],
                "training_attack_precision": check, "history": history, "warm_start_history": warm,
                "runtime": describe_runtime(device, bf16_training=cfg.bf16),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()
    distributed.finish()


if __name__ == "__main__":
    run(main)
