"""train_classifier: natural training, or Madry PGD adversarial training (the baseline), of one classifier."""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core import distributed
from aaa_core.attacks import PGDConfig
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.io import write_json
from aaa_core.config import load_params
from aaa_core.evaluation.flags import correct_flags, precision_gap
from aaa_core.models import build
from aaa_core.runtime import Resume, describe_runtime, resolve_device, seed_everything
from aaa_core.data import load_prepared
from aaa_core.training.loops import TrainConfig, train_classifier, training_attack
from aaa_core.data import split_train_val
from stages._cli import input_file, output_file, params_file, run


@click.command()
@click.option("--dataset", required=True)
@click.option("--arch", required=True, help="Registry name of the classifier, e.g. dnn or fc.")
@click.option("--mode", type=click.Choice(["natural", "adversarial"]), required=True)
@input_file("--data", "data_path", required=True)
@output_file("--out")
@output_file("--metrics", "metrics_path")
@input_file("--init", "init_path", default=None,
              help="Start from this classifier's weights (same dataset, architecture and arguments) instead of "
                   "a random initialisation: Madry fine-tuned from the natural classifier an AE stands on.")
@params_file()
def main(dataset: str, arch: str, mode: str, data_path: Path, out: Path, metrics_path: Path,
         init_path: Path | None, params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    split, train = params.section("split", dataset), params.section("train", dataset)
    distributed.relaunch(params.devices, "stages.train_classifier")
    seed_everything(params.seed)
    device = distributed.init(resolve_device(params.device))
    data = load_prepared(data_path, device)
    adversarial = mode == "adversarial"
    (x, y), (x_val, y_val) = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset,
                                             val_size=split.val_size, seed=params.seed)
    attack_cfg = adv = None
    if adversarial:
        adv = params.section("adversarial", dataset)
        attack_cfg = PGDConfig(eps=params.attack(dataset).eps, alpha=adv.alpha, steps=adv.steps)
    cfg = TrainConfig(epochs=(adv or params.section("classifier", dataset)).epochs,
                      batch_size=train.batch_size, lr=train.lr, lr_patience=train.lr_patience,
                      seed=params.seed, bf16=train.bf16,
                      epoch_images=adv.epoch_images if adversarial else 0,
                      eps_ramp=adv.eps_ramp if adversarial else 0, augment=train.augment)
    attack = training_attack(attack_cfg) if adversarial else None
    arch_kwargs = params.section("models", dataset).get(arch, {})
    model = build(dataset, arch, **arch_kwargs).to(device)
    if init_path is not None:
        start_model, start_info = load_model(init_path, kind="classifier", dataset=dataset, device=device)
        if (start_info["arch"], start_info["arch_kwargs"]) != (arch, arch_kwargs):
            raise click.BadParameter(f"{init_path}: a {start_info['arch']} {start_info['arch_kwargs']}, expected the "
                                     f"{arch} {arch_kwargs} of params models.{dataset}", param_hint="--init")
        model.load_state_dict(start_model.state_dict())
    description = {"dataset": dataset, "arch": arch, "arch_kwargs": arch_kwargs, "mode": mode, "train": cfg.__dict__,
                   "attack": attack_cfg.describe() if adversarial else None, "n_train": len(x),
                   "processes": distributed.world_size(), **({"init": str(init_path)} if init_path else {})}
    resume = Resume(out, inputs=[data_path, *([init_path] if init_path else [])])
    history = train_classifier(model, x, y, x_val, y_val, cfg, attack=attack,
                               resume=resume.load(description, click.echo),
                               save_state=resume.saver(description), log=click.echo)
    if not distributed.is_main():   # rank 0 alone evaluates and writes
        return distributed.finish()
    model.eval()
    test_acc = correct_flags(model, data["x_test"], data["y_test"]).float().mean().item()
    click.echo(f"{dataset} {arch} ({mode}): test accuracy {test_acc:.4f}")
    save_model(model, out, kind="classifier", dataset=dataset, arch=arch, arch_kwargs=arch_kwargs, mode=mode,
               description=description)
    metrics = {"dataset": dataset, "label": data["label"], "arch": arch, "mode": mode,
               "test_accuracy": test_acc, "n_test": len(data["x_test"]), **description, "history": history,
               "runtime": describe_runtime(device, bf16_training=cfg.bf16)}
    if adversarial and cfg.bf16:   # the bf16 attack must not be weaker than the float32 one it stands for
        metrics["training_attack_precision"] = precision_gap(model, x_val[:256], y_val[:256], attack_cfg)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    write_json(metrics, metrics_path)
    resume.clear()
    distributed.finish()


if __name__ == "__main__":
    run(main)
